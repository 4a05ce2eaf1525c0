"""Decode image bytes into the H×W×3 uint8 RGB array every predictor receives.

Decoding is where untrusted input meets C code, so it checks the declared size
before touching pixels (decompression bombs), restricts the formats it accepts,
and turns every failure into an :class:`ImageDecodeError` that names the file and
the cause. Pillow releases the GIL while decoding, so threads decode in parallel.
"""

from __future__ import annotations

import io
import re

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF")
DEFAULT_MAX_PIXELS = 50_000_000
BACKGROUND = (255, 255, 255)


class ImageDecodeError(ValueError):
    """An input that is not a usable image; ``source`` names it, ``reason`` says why."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


def decode_image(data: bytes, source: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Bytes of a PNG, JPEG, WebP, BMP, TIFF or GIF → H×W×3 uint8 RGB, EXIF-upright.

    Alpha is composited over white; 16-bit and float images are scaled, not
    clipped, to 8 bits; animated images give their first frame.
    """
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
    try:
        image.load()
        image = ImageOps.exif_transpose(image) or image
        return to_rgb_array(image)
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(source, _bomb_reason(exc, max_pixels)) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageDecodeError(source, f"corrupt or truncated {image.format} data: {exc}") from None


def _bomb_reason(exc: Image.DecompressionBombError, max_pixels: int) -> str:
    """Pillow refuses images over twice its own limit before we see their size."""
    found = re.search(r"\((\d+) pixels\)", str(exc))
    size = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
    return f"image has {size}, over the limit of {max_pixels:,} (possible decompression bomb)"


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """Any Pillow mode → H×W×3 uint8."""
    mode = image.mode
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return _high_depth_to_rgb(image)
    if (mode == "P" and "transparency" in image.info) or mode == "PA":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        image = Image.alpha_composite(canvas, rgba)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _high_depth_to_rgb(image: Image.Image) -> np.ndarray:
    """Scale 16-bit or float grey to 8 bits (Pillow's own conversion clips at 255)."""
    pixels = np.asarray(image)
    if image.mode == "F":
        finite = np.nan_to_num(pixels.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        high = float(finite.max()) if finite.size else 0.0
        scaled = finite * 255.0 if high <= 1.0 else finite * (255.0 / high)
    else:
        scaled = pixels.astype(np.float64) / 257.0
    grey = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


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
