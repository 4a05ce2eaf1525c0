"""Decode image bytes into the H×W×3 uint8 RGB array every predictor receives.

Decoding is where untrusted input meets C code, so it checks the declared size
before touching pixels (decompression bombs), restricts the formats it accepts,
and turns every failure into an :class:`ImageDecodeError` that names the file and
the cause. Pillow releases the GIL while decoding, so threads decode in parallel.
Memory is bounded twice: by pixels (the header's size, before decoding) and by
bytes (:mod:`infergraph.inference.decode_budget`); conversion to 8 bits works in
bands of rows, so a 16-bit image costs its Pillow pixels plus the uint8 result.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial

import numpy as np
from PIL import Image, UnidentifiedImageError

from infergraph.inference.decode_budget import DecodeBudgetError, process_budget

FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF")
DEFAULT_MAX_PIXELS = 50_000_000
BACKGROUND = (255, 255, 255)
#: Pixels converted at a time: bounds the conversion's temporaries to a few MiB.
BAND_PIXELS = 1 << 18
ORIENTATION = 0x0112
#: Bytes per pixel Pillow stores for a mode (every other mode takes 4).
_STORED_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}


class ImageDecodeError(ValueError):
    """An input that is not a usable image; ``source`` names it, ``reason`` says why.

    ``busy`` marks a refusal by the decode budget's wait: the image is fine, retry later.
    """

    def __init__(self, source: str, reason: str, busy: bool = False) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason
        self.busy = busy


def decode_image(data: bytes, source: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Bytes of a PNG, JPEG, WebP, BMP, TIFF or GIF → H×W×3 uint8 RGB, EXIF-upright.

    Alpha is composited over white; 16-bit and float images are scaled, not
    clipped, to 8 bits; animated images give their first frame. The decode holds
    its share of the process's decode budget only while it runs: callers that
    preprocess the pixels next should use :func:`decoded` instead.
    """
    with decoded(data, source, max_pixels) as image:
        return image


@contextmanager
def decoded(data: bytes, source: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> Iterator[np.ndarray]:
    """:func:`decode_image`, holding the decode budget until the caller is done with the pixels.

    Waits while other decodes use the budget; raises :class:`ImageDecodeError` when
    the image could never fit it, or (``busy``) when the budget's wait ran out.
    """
    image = _open(data, source, max_pixels)
    try:
        with process_budget().reserve(estimate_bytes(image)):
            pixels = _pixels(image, source, max_pixels)
            del image
            yield pixels
    except DecodeBudgetError as exc:
        raise ImageDecodeError(source, exc.reason, busy=exc.busy) from None


def estimate_bytes(image: Image.Image) -> int:
    """Memory a decode holds at its peak: Pillow's pixels, the uint8 result and one band."""
    width, height = image.size
    stored = _STORED_BYTES.get(image.mode, 4)
    return width * height * (stored + 3) + min(width * height, BAND_PIXELS) * 16


def _open(data: bytes, source: str, max_pixels: int) -> Image.Image:
    """Read the header only, refusing non-images and images over the pixel limit."""
    if not data:
        raise ImageDecodeError(source, "empty file (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError:
        claimed = _claimed_format(data)
        if claimed:
            raise ImageDecodeError(
                source, f"corrupt or truncated {claimed} data: its header cannot be read"
            ) from None
        raise ImageDecodeError(
            source, f"not a supported image ({_sniff(data)}); expected one of {', '.join(FORMATS)}"
        ) from None
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(source, _bomb_reason(exc, max_pixels)) from None
    except Exception as exc:
        claimed = _claimed_format(data) or "image"
        raise ImageDecodeError(
            source, f"corrupt or truncated {claimed} data: unreadable header ({exc})"
        ) from None
    width, height = image.size
    if width * height > max_pixels:
        raise ImageDecodeError(
            source,
            f"{image.format} image is {width}×{height} = {width * height:,} pixels, "
            f"over the limit of {max_pixels:,} (possible decompression bomb)",
        )
    return image


def _pixels(image: Image.Image, source: str, max_pixels: int) -> np.ndarray:
    """Decode, convert band by band, close the Pillow image, then turn upright."""
    fmt = image.format
    try:
        image.load()
        orientation = image.getexif().get(ORIENTATION, 1)
        rgb = to_rgb_array(image)
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(source, _bomb_reason(exc, max_pixels)) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageDecodeError(source, f"corrupt or truncated {fmt} data: {exc}") from None
    finally:
        image.close()
    return upright(rgb, orientation)


def _bomb_reason(exc: Image.DecompressionBombError, max_pixels: int) -> str:
    """Pillow refuses images over twice its own limit before we see their size."""
    found = re.search(r"\((\d+) pixels\)", str(exc))
    size = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
    return f"image has {size}, over the limit of {max_pixels:,} (possible decompression bomb)"


def upright(rgb: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) the way ``ImageOps.exif_transpose`` does."""
    view = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.transpose(1, 0, 2),
        6: lambda a: np.rot90(a, k=-1),
        7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
        8: lambda a: np.rot90(a, k=1),
    }.get(orientation)
    return rgb if view is None else np.ascontiguousarray(view(rgb))


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """Any loaded Pillow mode → H×W×3 uint8, converted in bands of rows.

    Converting the whole image at once would hold a second and third full-size
    copy (and, for 16-bit and float pixels, float64 temporaries eight times the
    size of the result); bands keep the extra memory to a few MiB.
    """
    width, height = image.size
    out = np.empty((height, width, 3), dtype=np.uint8)
    rows = max(1, BAND_PIXELS // max(1, width))
    convert = _band_converter(image)
    for top in range(0, height, rows):
        bottom = min(height, top + rows)
        out[top:bottom] = convert(image.crop((0, top, width, bottom)))
    return out


def _band_converter(image: Image.Image) -> Callable[[Image.Image], np.ndarray]:
    """How one band of ``image`` becomes uint8: by its mode (float needs the global maximum)."""
    mode = image.mode
    if mode.startswith("I;16") or mode == "I":
        return _high_depth_band
    if mode == "F":
        return partial(_float_band, scale=_float_scale(image))
    return _band_to_rgb


def _high_depth_band(band: Image.Image) -> np.ndarray:
    """16-bit (or 32-bit int) grey → its high byte: 0..65535 onto 0..255, never clipped."""
    pixels = np.asarray(band)
    if pixels.dtype.itemsize > 2:
        pixels = np.clip(pixels, 0, 65535)
    return (pixels >> 8).astype(np.uint8)[..., None]


def _float_scale(image: Image.Image) -> float:
    """Floats in [0, 1] scale by 255, larger ones by 255 / their finite maximum."""
    width, height = image.size
    rows = max(1, BAND_PIXELS // max(1, width))
    high = 0.0
    for top in range(0, height, rows):
        band = np.asarray(image.crop((0, top, width, min(height, top + rows))))
        finite = band[np.isfinite(band)]
        if finite.size:
            high = max(high, float(finite.max()))
    return 255.0 if high <= 1.0 else 255.0 / high


def _float_band(band: Image.Image, scale: float) -> np.ndarray:
    pixels = np.nan_to_num(np.asarray(band, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    return np.clip(np.rint(pixels * scale), 0, 255).astype(np.uint8)[..., None]


def _band_to_rgb(band: Image.Image) -> np.ndarray:
    """8-bit modes: palette transparency and alpha composited over white, then RGB."""
    if (band.mode == "P" and "transparency" in band.info) or band.mode == "PA":
        band = band.convert("RGBA")
    if band.mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = band.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        band = Image.alpha_composite(canvas, rgba)
    return np.asarray(band.convert("RGB"), dtype=np.uint8)


_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


def _claimed_format(data: bytes) -> str | None:
    """The supported format a file's signature claims, when Pillow still cannot read it."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((name for magic, name in _MAGIC if data.startswith(magic)), None)


_SIGNATURES = (
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"\x1f\x8b", "gzip data"),
    (b"{", "JSON or text"),
    (b"[", "JSON or text"),
    (b"<", "XML, SVG or HTML"),
)


def _sniff(data: bytes) -> str:
    """A short guess at what a non-image is, for the error message."""
    for magic, what in _SIGNATURES:
        if data.startswith(magic):
            return f"looks like {what}"
    head = data[:16]
    if all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return f"looks like text: {' '.join(head.decode('ascii').split())!r}…"
    return f"{len(data):,} bytes starting {head[:8].hex(' ')}"
