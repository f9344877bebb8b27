"""The ``image`` option of every source (sources/image.py): keep, resize, re-encode, reject."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from advbench.config import ConfigError, parse_config
from advbench.pipeline import make_source
from advbench.records import InputRejected
from advbench.sources.image import ImageOptions, prepare_image
from tests.conftest import make_mimic_root


def _encode(array: np.ndarray, fmt: str, **save) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **save)
    return buf.getvalue()


def _gray(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth gradient with some noise: resizes and JPEG behave as on a radiograph."""
    y, x = np.mgrid[0:height, 0:width]
    noise = np.random.default_rng(seed).integers(0, 20, (height, width))
    return ((x * 3 + y * 2) % 200 + noise).astype(np.uint8)


def _decoded(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def _config(source: dict, **image):
    return parse_config({"name": "t", "version": "1.0.0", "output": "out",
                         "sources": [{**source, "image": image} if image else source]},
                        where="inline")


def test_default_keeps_the_source_bytes_exactly():
    data = _encode(_gray(300, 200), "JPEG", quality=90)
    prepared = prepare_image(data, ImageOptions(), "x.jpg")
    assert prepared.data == data
    assert (prepared.width, prepared.height, prepared.format) == (300, 200, "jpeg")


@pytest.mark.parametrize(("size", "max_side", "expected"), [
    ((300, 200), 150, (150, 100)),  # landscape: width is the longer side
    ((200, 300), 150, (100, 150)),  # portrait
    ((2500, 3056), 512, (419, 512)),  # a MIMIC-like radiograph: 2500 * 512 / 3056 = 418.8
    ((1000, 3), 100, (100, 1)),  # never zero pixels
])
def test_max_side_resizes_keeping_the_aspect(size, max_side, expected):
    data = _encode(_gray(*size), "JPEG")
    prepared = prepare_image(data, ImageOptions(max_side=max_side), "x.jpg")
    img = _decoded(prepared.data)
    assert (prepared.width, prepared.height) == img.size == expected
    assert img.format == "JPEG" and prepared.format == "jpeg"  # original: the source's format
    assert img.mode == "L"  # grayscale stays grayscale


def test_never_upscales():
    data = _encode(_gray(64, 48), "JPEG")
    assert prepare_image(data, ImageOptions(max_side=1000), "x.jpg").data == data
    png = prepare_image(data, ImageOptions(max_side=1000, format="png"), "x.jpg")
    assert (png.width, png.height) == _decoded(png.data).size == (64, 48)


def test_png_is_lossless():
    source = _encode(_gray(120, 80), "JPEG", quality=70)
    prepared = prepare_image(source, ImageOptions(format="png"), "x.jpg")
    out = _decoded(prepared.data)
    assert out.format == "PNG" and prepared.format == "png" and out.mode == "L"
    assert np.array_equal(np.asarray(out), np.asarray(_decoded(source)))


def test_original_png_resized_stays_png():
    source = _encode(_gray(200, 100), "PNG")
    prepared = prepare_image(source, ImageOptions(max_side=50), "x.png")
    assert _decoded(prepared.data).format == "PNG" and (prepared.width, prepared.height) == (50, 25)


def test_jpeg_quality_is_honoured():
    source = _encode(_gray(256, 256), "PNG")
    pixels = _decoded(source)
    sizes = {}
    for quality in (20, 95):
        prepared = prepare_image(source, ImageOptions(format="jpeg", quality=quality), "x.png")
        expected = io.BytesIO()
        pixels.save(expected, format="JPEG", quality=quality)
        assert prepared.data == expected.getvalue()  # the same quantisation as PIL at quality
        sizes[quality] = len(prepared.data)
    assert sizes[20] < sizes[95] / 2


def test_explicit_jpeg_re_encodes_even_a_jpeg_source():
    source = _encode(_gray(128, 128), "JPEG", quality=95)
    prepared = prepare_image(source, ImageOptions(format="jpeg", quality=30), "x.jpg")
    assert prepared.data != source and len(prepared.data) < len(source)


def test_sixteen_bit_stays_sixteen_bit_in_png_and_is_rejected_for_jpeg():
    deep = (np.arange(200 * 100, dtype=np.uint16).reshape(100, 200) * 3)
    source = _encode(deep, "PNG")
    prepared = prepare_image(source, ImageOptions(max_side=100), "deep.png")
    out = _decoded(prepared.data)
    assert out.mode == "I;16" and out.size == (100, 50)
    assert np.asarray(out).max() > 255  # not squeezed into 8 bits
    with pytest.raises(InputRejected, match=r"16-bit .* deep\.png") as err:
        prepare_image(source, ImageOptions(format="jpeg"), "deep.png")
    assert err.value.reason == "unsupported_image"


def test_rgb_stays_rgb_and_alpha_cannot_go_to_jpeg():
    rgb = np.dstack([_gray(40, 30)] * 3)
    out = _decoded(prepare_image(_encode(rgb, "PNG"), ImageOptions(format="jpeg"), "c.png").data)
    assert out.mode == "RGB"
    rgba = np.dstack([rgb, np.full((30, 40), 128, np.uint8)])
    with pytest.raises(InputRejected, match="transparency") as err:
        prepare_image(_encode(rgba, "PNG"), ImageOptions(format="jpeg"), "a.png")
    assert err.value.reason == "unsupported_image"


@pytest.mark.parametrize("options", [ImageOptions(), ImageOptions(max_side=32, format="png")])
def test_corrupt_or_empty_image_is_unreadable_image(options):
    data = _encode(_gray(64, 64), "JPEG")
    with pytest.raises(InputRejected, match=r"cannot decode image cut\.jpg") as err:
        prepare_image(data[: len(data) // 3], options, "cut.jpg")
    assert err.value.reason == "unreadable_image"
    with pytest.raises(InputRejected, match="empty: none.jpg"):
        prepare_image(b"", options, "none.jpg")


@pytest.mark.parametrize("source", [{"kind": "mimic-cxr-jpg", "root": "m"},
                                    {"kind": "phantom-cxr", "studies": 2}])
def test_every_source_config_has_image_defaults(source):
    options = _config(source).sources[0].image
    assert options == ImageOptions(max_side=None, format="original", quality=95)


@pytest.mark.parametrize(("image", "expected"), [
    ({"max_side": 0}, "sources[0].image.max_side: Input should be greater than or equal to 1"),
    ({"format": "gif"}, "sources[0].image.format: Input should be 'original', 'png' or 'jpeg'"),
    ({"quality": 0}, "sources[0].image.quality: Input should be greater than or equal to 1"),
    ({"quality": 101}, "sources[0].image.quality: Input should be less than or equal to 100"),
    ({"size": 512}, "sources[0].image.size: unknown key"),
])
@pytest.mark.parametrize("source", [{"kind": "mimic-cxr-jpg", "root": "m"},
                                    {"kind": "phantom-cxr", "studies": 2}])
def test_bad_image_options_are_rejected_naming_the_key(source, image, expected):
    with pytest.raises(ConfigError) as err:
        _config(source, **image)
    assert f"inline: {expected}" in str(err.value)


def test_mimic_source_applies_the_option(tmp_path):
    root = make_mimic_root(tmp_path / "m")
    cfg = _config({"kind": "mimic-cxr-jpg", "root": str(root)}, max_side=32, format="png")
    source = make_source(cfg, 0)
    ref = next(r for r in source.plan().refs if r.id == "d0001-pa")
    study = source.load(ref)
    assert (study.width, study.height) == _decoded(study.image_bytes).size == (32, 32)
    assert study.image_bytes.startswith(b"\x89PNG") and study.extra["image_format"] == "png"
    assert study.image_path.endswith("d0001-pa.jpg")  # provenance: the source's file


def test_phantom_source_honours_the_option():
    from advbench.phantoms import generate_study

    plain = make_source(_config({"kind": "phantom-cxr", "studies": 2, "size": 128}), 0)
    ref = plain.plan().refs[0]
    kept = plain.load(ref)
    made = generate_study(ref.fields["index"], seed=0, size=128)
    assert kept.image_bytes == made.jpeg_bytes(quality=95)  # its own encoding, kept exactly
    assert (kept.modality, kept.body_part) == ("XR", "chest")

    small = make_source(_config({"kind": "phantom-cxr", "studies": 2, "size": 128},
                                max_side=64, format="png"), 0).load(ref)
    assert (small.width, small.height) == _decoded(small.image_bytes).size == (64, 64)
    assert _decoded(small.image_bytes).format == "PNG" and _decoded(small.image_bytes).mode == "L"


# --- draft mode: a JPEG decoded at 1/8 (kept) or at about twice the target size (resized) -------


def _photo(width: int, height: int) -> np.ndarray:
    """skimage's camera photo scaled up: a smooth, structured image that compresses like a
    radiograph (noise would not), at the given size."""
    from skimage.data import camera

    photo = Image.fromarray(camera()).resize((width, height), Image.Resampling.BICUBIC)
    return np.asarray(photo)


def _full_decode_rejects(data: bytes) -> bool:
    """What the module did before draft mode: decode every pixel at full size."""
    try:
        _decoded(data)
    except (OSError, SyntaxError, ValueError):
        return True
    return False


def _rejects(data: bytes, options: ImageOptions) -> bool:
    try:
        prepare_image(data, options, "v.jpg")
    except InputRejected as err:
        assert err.reason == "unreadable_image"
        return True
    return False


def _damaged(data: bytes) -> dict[str, bytes]:
    """Truncated and corrupted versions of a JPEG; the corruptions hit the middle of the scan
    data (after the first SOS marker)."""
    size = len(data)
    middle = (data.index(b"\xff\xda") + size) // 2
    noise = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()

    def patched(patch: bytes) -> bytes:
        return data[:middle] + patch + data[middle + len(patch):]

    flipped = bytearray(data)
    flipped[middle] ^= 0x10
    return {
        **{f"cut at {p}%": data[: size * p // 100] for p in (99, 90, 50, 10)},
        "no end-of-image marker": data[:-2],
        "no end-of-image marker, last byte cut": data[:-3],
        "headers only": data[: data.index(b"\xff\xda") + 20],
        "4 KiB of noise": patched(noise),
        "64 bytes of noise": patched(noise[:64]),
        "4 KiB of zeros": patched(bytes(4096)),
        "one bit flipped": bytes(flipped),
        "stray DHT marker": patched(b"\xff\xc4"),
        "stray EOI marker": patched(b"\xff\xd9"),
        "10 kB cut out": data[:middle] + data[middle + 10_000:],
        "junk after the end": data + b"junk" * 10,
    }


@pytest.mark.parametrize("progressive", [False, True], ids=["baseline", "progressive"])
def test_draft_decode_rejects_exactly_what_a_full_decode_rejects(progressive):
    from PIL import ImageFile

    # Truncation is only an error while Pillow is not told to load truncated images.
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    data = _encode(_photo(1000, 1200), "JPEG", quality=95, progressive=progressive)
    variants = _damaged(data)
    full = {name for name, bad in variants.items() if _full_decode_rejects(bad)}
    # Every cut into the scan data is caught. Corruption is caught when it breaks the stream
    # (here: the noise, the DHT marker); libjpeg only warns about the rest, and Pillow ignores its
    # warnings, with or without draft mode. A file missing only its end-of-image marker passes
    # when libjpeg already has every bit it needs (this baseline one does; the progressive one
    # does not): full decode and draft agree on that too.
    assert {"cut at 99%", "cut at 90%", "cut at 50%", "cut at 10%", "headers only",
            "no end-of-image marker, last byte cut", "4 KiB of noise", "stray DHT marker"} <= full
    for options in (ImageOptions(),  # kept: drafted to 1/8
                    ImageOptions(max_side=150),  # resized: drafted to 1/4
                    ImageOptions(max_side=300, format="png"),  # resized: drafted to 1/2
                    ImageOptions(format="png")):  # re-encoded at full size: decoded fully
        assert {name for name, bad in variants.items() if _rejects(bad, options)} == full
    assert not _rejects(data, ImageOptions())


@pytest.mark.parametrize(("options", "decoded"), [
    (ImageOptions(), (126, 151)),  # kept: 1/8 is enough to read the whole scan
    (ImageOptions(format="jpeg", max_side=74), (126, 151)),  # 1/8: >= 2 x (62, 74)
    (ImageOptions(max_side=150), (251, 301)),  # 1/4: the smallest scale >= 2 x (125, 150)
    (ImageOptions(max_side=300), (501, 601)),  # 1/2: >= 2 x (250, 300)
    (ImageOptions(max_side=512), (1001, 1201)),  # 1201 / 512 < 2 x 2: full size
    (ImageOptions(format="png"), (1001, 1201)),  # re-encoded unresized: every pixel is needed
])
def test_jpeg_is_decoded_at_the_smallest_scale_that_serves(monkeypatch, options, decoded):
    from PIL import JpegImagePlugin

    loaded = []
    load = JpegImagePlugin.JpegImageFile.load

    def spy(self):
        loaded.append(self.size)
        return load(self)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "load", spy)
    data = _encode(_photo(1001, 1201), "JPEG", quality=95)
    prepared = prepare_image(data, options, "x.jpg")
    assert loaded[0] == decoded
    target = {None: (1001, 1201), 74: (62, 74), 150: (125, 150), 300: (250, 300),
              512: (427, 512)}[options.max_side]
    assert (prepared.width, prepared.height) == _decoded(prepared.data).size == target


def _bricks(width: int, height: int) -> np.ndarray:
    """skimage's brick wall, tiled at its own resolution: sharp detail, the hard case."""
    from skimage.data import brick

    wall = brick()
    return np.tile(wall, (-(-height // wall.shape[0]), -(-width // wall.shape[1])))[:height, :width]


@pytest.mark.parametrize(("image", "max_side"), [
    (_photo, 512),  # 2048 x 2048 drafted to 1/2
    (_photo, 224),  # drafted to 1/4
    (_photo, 100),  # drafted to 1/8
    (_bricks, 384),  # sharp: drafted to 1/2
    (_bricks, 200),  # sharp: drafted to 1/4
])
def test_drafted_resize_looks_like_a_full_size_resize(image, max_side):
    data = _encode(image(2048, 2048), "JPEG", quality=95)
    prepared = prepare_image(data, ImageOptions(max_side=max_side, format="png"), "x.jpg")
    full = _decoded(data).resize((max_side, max_side), Image.Resampling.LANCZOS)
    difference = np.abs(np.asarray(_decoded(prepared.data), float) - np.asarray(full, float))
    # Measured 0.23-0.50 grey levels (at most 5). Drafted to the target size itself instead of
    # twice it, 0.37-2.96: 1.7 and 3.0 on the bricks, 1.2 on the photo at 224.
    assert difference.mean() < 1.5


def test_drafted_resize_of_odd_sides_matches_too():
    """Sides that are not multiples of 8: the draft's last row and column are partial blocks."""
    data = _encode(_photo(1001, 1203), "JPEG", quality=95)
    prepared = prepare_image(data, ImageOptions(max_side=300, format="png"), "x.jpg")
    assert (prepared.width, prepared.height) == (250, 300)
    full = _decoded(data).resize((250, 300), Image.Resampling.LANCZOS)
    difference = np.abs(np.asarray(_decoded(prepared.data), float) - np.asarray(full, float))
    assert difference.mean() < 1.5  # measured 0.32


def _encoded(fmt: str, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (9, 7), 128 if mode in ("L", "1") else (10, 120, 230)).save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize(("fmt", "suffix"), [("PNG", ".png"), ("JPEG", ".jpg"), ("TIFF", ".tiff"),
                                              ("BMP", ".bmp"), ("GIF", ".gif"),
                                              ("WEBP", ".webp"), ("PPM", ".pnm")])
def test_image_suffix_names_the_format_of_bytes_kept_as_original(fmt, suffix):
    from advbench.images import image_suffix

    prepared = prepare_image(_encoded(fmt), ImageOptions(), "test")
    assert prepared.data == _encoded(fmt)  # kept as found: the suffix must say what they are
    assert image_suffix(prepared.data) == suffix
    assert Image.registered_extensions()[suffix] == fmt  # Pillow reads the suffix the same way


def test_image_suffix_table_agrees_with_pillow_and_unknown_formats_raise():
    from advbench.images import FORMAT_SUFFIXES, image_suffix

    extensions = Image.registered_extensions()
    for fmt, suffix in FORMAT_SUFFIXES.items():
        assert extensions[suffix] == ("JPEG" if fmt == "MPO" else fmt), fmt
    with pytest.raises(ValueError, match="XBM"):
        image_suffix(_encoded("XBM", "1"))  # an image Pillow names, with no suffix in the table
    with pytest.raises(ValueError, match="cannot identify"):
        image_suffix(b"not an image at all")
