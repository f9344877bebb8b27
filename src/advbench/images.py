"""Lossless pixels: the one place arrays become PNG bytes and back.

Images the pipeline creates or changes are stored as PNG, never JPEG: JPEG's quantisation
would wipe out an ε = 4/255 perturbation. Source images in ``clean`` keep their own bytes.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def encode_png(pixels: np.ndarray | bytes) -> bytes:
    """PNG bytes of a uint8 / uint16 array (H×W gray, H×W×3 RGB, H×W×4 RGBA); PNG bytes pass."""
    if isinstance(pixels, bytes | bytearray):
        if not bytes(pixels[:8]) == PNG_SIGNATURE:
            raise ValueError("image bytes are not PNG; pass pixels as an array to store them")
        return bytes(pixels)
    array = np.asarray(pixels)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if (array.dtype == np.uint16 and array.ndim == 2) or (
            array.dtype == np.uint8 and (array.ndim == 2 or array.shape[2] in (3, 4))):
        image = Image.fromarray(np.ascontiguousarray(array))
    else:
        raise ValueError(
            f"cannot store pixels of dtype {array.dtype} and shape {array.shape} losslessly; "
            "use uint8 (H×W, H×W×3, H×W×4) or uint16 (H×W)"
        )
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=4)
    return buf.getvalue()


def decode_pixels(data: bytes) -> np.ndarray:
    """Pixels of encoded image bytes: uint8 for 8-bit images, uint16 for 16-bit gray."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        if image.mode in ("I;16", "I;16B", "I;16L"):
            return np.asarray(image, dtype=np.uint16)
        if image.mode not in ("L", "RGB", "RGBA"):
            image = image.convert("RGB")
        return np.asarray(image)


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) of PNG bytes, from the IHDR chunk: no need to decode the pixels."""
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


# Pillow's format name -> the file suffix of a release Image ``path`` for bytes of that format.
FORMAT_SUFFIXES = {
    "PNG": ".png",
    "JPEG": ".jpg",
    "MPO": ".jpg",  # multi-picture JPEG: a JPEG to every reader
    "TIFF": ".tiff",
    "BMP": ".bmp",
    "DIB": ".dib",
    "GIF": ".gif",
    "WEBP": ".webp",
    "JPEG2000": ".jp2",  # a bare codestream is .j2k (below)
    "AVIF": ".avif",
    "PPM": ".pnm",  # any Netpbm file (PBM, PGM, PPM)
    "TGA": ".tga",
    "QOI": ".qoi",
    "ICO": ".ico",
    "PCX": ".pcx",
    "SGI": ".sgi",
    "PSD": ".psd",
}
_J2K_SIGNATURE = b"\xff\x4f\xff\x51"


def image_suffix(data: bytes) -> str:
    """The file suffix that matches encoded bytes (``.png``, ``.jpg``, ``.tiff``, ``.bmp``...),
    for the Image ``path``.

    Raises ``ValueError`` for bytes Pillow cannot identify and for a format with no suffix in
    ``FORMAT_SUFFIXES`` (naming it), rather than give a suffix that lies about the bytes.
    """
    if data[:8] == PNG_SIGNATURE:
        return ".png"
    if data[:3] == b"\xff\xd8\xff":
        return ".jpg"
    try:
        with Image.open(io.BytesIO(data)) as image:  # reads the header only
            name = image.format or "unknown"
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"cannot identify the image format of the bytes: {exc}") from None
    if name == "JPEG2000" and data[:4] == _J2K_SIGNATURE:
        return ".j2k"
    try:
        return FORMAT_SUFFIXES[name]
    except KeyError:
        raise ValueError(f"no file suffix known for {name} images; add one to "
                         "advbench.images.FORMAT_SUFFIXES") from None
