"""Pillow conversions of full-size decoded images without full-size temporaries.

``Image.fromarray(rgb).convert("L")`` holds a 4-byte-per-pixel RGB copy beside the
3-byte array: for a 20-megapixel upload that is 80 MB more than the result needs.
Converting bands of rows gives the same pixels (the conversion is per pixel) at a
few MiB of overhead.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

#: Pixels converted at a time.
BAND_PIXELS = 1 << 18


def grey_image(rgb: np.ndarray) -> Image.Image:
    """H×W×3 uint8 → the mode "L" image ``Image.fromarray(rgb).convert("L")`` gives."""
    height, width = rgb.shape[:2]
    grey = np.empty((height, width), dtype=np.uint8)
    rows = max(1, BAND_PIXELS // max(1, width))
    for top in range(0, height, rows):
        band = np.ascontiguousarray(rgb[top : top + rows])
        grey[top : top + rows] = np.asarray(Image.fromarray(band).convert("L"))
    return Image.fromarray(grey)
