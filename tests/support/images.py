"""Images in memory, encoded as a client would upload them."""

from __future__ import annotations

import io

from PIL import Image


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()
