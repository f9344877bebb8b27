"""The ``image`` option every source has: keep the source's bytes, or resize and re-encode.

Real MIMIC-CXR-JPG images are about 2,500 × 3,000 pixels; most models read far less, so a
benchmark may store them smaller. Each loaded image is decoded once, to the end of its data (a
truncated file, or one whose data cannot be decoded, is rejected as ``unreadable_image``; damage
that libjpeg only warns about passes, as Pillow ignores its warnings), then kept or written again:

- ``format: original`` and no resize (the default): the source's bytes, exactly.
- ``format: original`` with a resize: written again in the source's own format, JPEG at
  ``quality``, PNG losslessly; any other format (TIFF, BMP, ...) becomes PNG, as lossless.
- ``format: png`` / ``jpeg``: always written in that format (JPEG at ``quality``), resized or not.

Resizing keeps the aspect ratio (the longer side becomes ``max_side``), uses Lanczos resampling
and never enlarges. Grayscale stays grayscale: "L" stays "L"; 16-bit grayscale stays 16-bit in
PNG and is rejected as ``unsupported_image`` for JPEG, which cannot hold it (squeezing it to
8 bits would need a window the data do not give). Alpha cannot go to JPEG either.

A JPEG is decoded in libjpeg's draft mode where the full pixels are not needed: when its bytes
are kept, at 1/8 scale; when it is resized, at the smallest of 1/8, 1/4 and 1/2 scale that is
still twice the target size (else full size), then resized with Lanczos. Draft mode only scales
the inverse DCT: libjpeg still reads and entropy-decodes every scan to the end, so it rejects
exactly the files a full decode rejects (tests/test_image_options.py checks truncated and
corrupted ones, progressive JPEGs included). Like any decode here, it relies on Pillow's
``ImageFile.LOAD_TRUNCATED_IMAGES`` being False, its default.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Literal

from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field

from advbench.records import InputRejected

_DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError,
                  Image.DecompressionBombError)
_SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N", "I"}
_WITH_ALPHA = {"LA", "La", "RGBA", "RGBa", "PA"}
# A JPEG to resize is decoded at the smallest DCT scale still this many times the target size,
# as Pillow's thumbnail() does: at 1x the Lanczos step has almost nothing left to do and the
# result is libjpeg's block-wise reduction, up to 3.6 grey levels off a full-size Lanczos
# resize on sharp images (2x: at most 0.8).
_DRAFT_GAP = 2
# Modes written as they are; everything else is converted first (see _output_mode).
_KEEP = {"jpeg": {"L", "RGB", "CMYK"}, "png": {"L", "RGB", "LA", "RGBA", "I;16"}}


class ImageOptions(BaseModel):
    """How a source's images go into the release: kept as found, or resized and re-encoded."""

    model_config = ConfigDict(extra="forbid")

    max_side: int | None = Field(
        default=None, ge=1,
        description="Longest side in pixels after resizing (aspect kept, never enlarged); "
                    "default: keep the size.",
    )
    format: Literal["original", "png", "jpeg"] = Field(
        default="original",
        description="original keeps the source's bytes (re-encoded in the source's format "
                    "only when resized); png or jpeg always re-encode.",
    )
    quality: int = Field(default=95, ge=1, le=100, description="JPEG quality when writing JPEG.")


@dataclass(frozen=True)
class PreparedImage:
    """An image as it goes into the release: encoded bytes, size and format (``jpeg``...)."""

    data: bytes
    width: int
    height: int
    format: str


def prepare_image(data: bytes, options: ImageOptions, where: str) -> PreparedImage:
    """Decode ``data`` once, then keep it or resize and re-encode it per ``options``.

    Raises ``InputRejected``: ``unreadable_image`` for an empty, truncated or corrupt file,
    ``unsupported_image`` for one that cannot be written as asked; messages name ``where``.
    """
    if not data:
        raise InputRejected("unreadable_image", f"image file is empty: {where}")
    try:
        with Image.open(io.BytesIO(data)) as img:
            source_format = _format_name(img.format)
            width, height = img.size  # the real size: draft mode shrinks img.size
            size = _target_size((width, height), options.max_side)
            keep = options.format == "original" and size == (width, height)
            box = None
            if source_format == "jpeg" and (keep or size != (width, height)):
                # ms per 2,500 x 3,000 grey q95 JPEG (0.9 | 2.3 MB), full decode -> draft:
                # kept 11.4 | 23.6 -> 7.2 | 17.0; max_side 512: 40 | 51 -> 17 | 29 (1024: no draft)
                drafted = img.draft(img.mode, (max(1, width // 8), max(1, height // 8)) if keep
                                    else (_DRAFT_GAP * size[0], _DRAFT_GAP * size[1]))
                box = drafted[1] if drafted else None
            img.load()  # to the end of the data, drafted or not: this is the integrity check
            if keep:
                return PreparedImage(data, width, height, source_format)
            return _write(img, size, box, source_format, options, where)
    except InputRejected:
        raise
    except _DECODE_ERRORS as exc:
        raise InputRejected("unreadable_image", f"cannot decode image {where}: {exc}") from None


def _write(img: Image.Image, size: tuple[int, int], box: tuple[float, ...] | None,
           source_format: str, options: ImageOptions, where: str) -> PreparedImage:
    """Encode the loaded ``img`` at ``size``; ``box``: the full image's extent in a draft."""
    target = options.format
    if target == "original":
        target = source_format if source_format in ("jpeg", "png") else "png"
    out = img.convert(_output_mode(img, target, where)) if img.mode not in _KEEP[target] else img
    if size != out.size:
        out = out.resize(size, Image.Resampling.LANCZOS, box=box)
    buf = io.BytesIO()
    extra = {"quality": options.quality} if target == "jpeg" else {}
    if img.info.get("icc_profile"):
        extra["icc_profile"] = img.info["icc_profile"]
    out.save(buf, format=target.upper(), **extra)
    return PreparedImage(buf.getvalue(), out.width, out.height, target)


def _target_size(size: tuple[int, int], max_side: int | None) -> tuple[int, int]:
    """The size with the longer side at most ``max_side``, aspect kept; never larger."""
    width, height = size
    if max_side is None or max(width, height) <= max_side:
        return size
    scale = max_side / max(width, height)
    if width >= height:
        return max_side, max(1, round(height * scale))
    return max(1, round(width * scale)), max_side


def _output_mode(img: Image.Image, target: str, where: str) -> str:
    """The mode to convert to before writing ``target``; reject what would be mangled."""
    mode = img.mode
    if mode == "P":
        mode = "RGBA" if "transparency" in img.info else "RGB"
    if mode in _SIXTEEN_BIT:
        if target == "png":
            if mode == "I" and not _fits_16_bits(img):
                raise InputRejected("unsupported_image",
                                    f"32-bit integer image cannot be written as PNG: {where}")
            return "I;16"
        raise InputRejected(
            "unsupported_image",
            f"16-bit grayscale image cannot be written as JPEG without losing depth: {where} "
            "(use image.format png or original)",
        )
    if mode in _WITH_ALPHA:
        if target == "png":
            return "LA" if mode in ("LA", "La") else "RGBA"
        raise InputRejected("unsupported_image",
                            f"image with transparency ({img.mode}) cannot be written as JPEG: "
                            f"{where}")
    if mode == "F":
        raise InputRejected("unsupported_image",
                            f"floating-point image cannot be written as {target}: {where}")
    if mode == "1":
        return "L"
    return mode if mode in _KEEP[target] else "RGB"


def _fits_16_bits(img: Image.Image) -> bool:
    low, high = img.getextrema()
    return 0 <= low and high <= 0xFFFF


def _format_name(pil_format: str | None) -> str:
    """PIL's format name in lower case; a multi-picture JPEG (MPO) is a JPEG."""
    name = (pil_format or "unknown").lower()
    return "jpeg" if name == "mpo" else name
