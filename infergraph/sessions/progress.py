"""What a session shows while it runs: an annotated picture of its boxes, control-panel logs.

The picture is one strip of the session's pictures (ordered by base position,
scaled to ``THUMB_HEIGHT``) with every stored box drawn — items green,
containers blue, each labelled with its object number once planned — written
beside the pictures (S3 prefix or local folder) and linked from a markdown
artifact. A small strip is embedded as a data URI too, so the UI shows it
without access to the bucket.

The control panel's log endpoint (the reference's ``<host>/log/``) gets one POST
per picture and per session step, ``{arm_id, session_id, log_type, finished}``;
it is optional and best effort: a panel that is down costs a warning, never the
session.
"""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import Sequence
from typing import Any

import httpx
from PIL import Image, ImageDraw, ImageOps

from infergraph.sessions.planning import ITEM
from infergraph.sessions.service import ImageVault
from infergraph.sessions.store import SessionStore

log = logging.getLogger("infergraph.sessions.progress")
THUMB_HEIGHT = 240
EMBED_LIMIT = 200_000  # bytes of PNG embedded as a data URI; bigger strips are only linked
COLOURS = {"item": (40, 200, 60), "container": (40, 110, 240)}


def annotated_strip(store: SessionStore, vault: ImageVault, arm_id: str, session_id: str) -> bytes:
    """The session's pictures side by side with their boxes drawn, as PNG bytes."""
    images = [i for i in store.images(arm_id, session_id) if i.uri]  # by base position
    boxes: dict[str, list[dict[str, Any]]] = {}
    for box in store.boxes(arm_id, session_id):
        boxes.setdefault(box["image_name"], []).append(box)
    tiles = [_tile(vault, image, boxes.get(image.image_name, [])) for image in images]
    width = sum(t.width for t in tiles) or 1
    strip = Image.new("RGB", (width, THUMB_HEIGHT), (32, 32, 32))
    x = 0
    for tile in tiles:
        strip.paste(tile, (x, 0))
        x += tile.width
    out = io.BytesIO()
    strip.save(out, "PNG", compress_level=6)
    return out.getvalue()


def _tile(vault: ImageVault, image: Any, boxes: Sequence[dict[str, Any]]) -> Image.Image:
    scale = THUMB_HEIGHT / image.height  # the stored size is the upright picture's
    size = (max(1, round(image.width * scale)), THUMB_HEIGHT)
    tile = _thumbnail(vault.get(image.uri), size)
    draw = ImageDraw.Draw(tile)
    for box in boxes:
        colour = COLOURS["item" if box["class_id"] == ITEM else "container"]
        corners = [box[k] * scale for k in ("x1", "y1", "x2", "y2")]
        draw.rectangle(corners, outline=colour, width=2)
        number = box.get("object_no")
        if number is not None:
            draw.text((corners[0] + 3, corners[1] + 2), str(number), fill=colour)
    draw.text((4, 4), image.image_name, fill=(255, 255, 255))
    return tile


def _thumbnail(data: bytes, size: tuple[int, int]) -> Image.Image:
    """The picture at ``size``; a JPEG is decoded at reduced scale (its DCT draft), ~10× faster.

    The picture passed the safe decoder when it was received; this only reads it back.
    """
    picture = Image.open(io.BytesIO(data))
    picture.draft("RGB", (size[0], size[1]))  # a no-op for PNG
    upright = ImageOps.exif_transpose(picture).convert("RGB")
    if upright.size != size:
        upright = upright.resize(size, Image.BILINEAR)
    return upright


def publish_strip(png: bytes, uri: str, vault: ImageVault, key: str, title: str) -> str:
    """Write the strip to ``uri`` and return the markdown of its artifact."""
    vault.put(uri, png)
    link = uri if uri.startswith("s3://") else f"file://{uri}"
    lines = [f"# {title}", "", f"Annotated pictures: [{uri}]({link})", ""]
    if len(png) <= EMBED_LIMIT:
        data = base64.b64encode(png).decode()
        lines.append(f"![{key}](data:image/png;base64,{data})")
    else:
        lines.append(f"(the strip is {len(png):,} bytes: open the link)")
    lines += ["", "Green: items; blue: containers; numbers: objects after merging."]
    return "\n".join(lines)


def post_log(
    url: str | None,
    arm_id: str,
    session_id: str,
    log_type: str,
    finished: bool,
    timeout: float = 5.0,
    client: httpx.Client | None = None,
) -> bool:
    """POST one progress record to the control panel's ``<url>/log/``; False if it failed."""
    if not url:
        return False
    body = {"arm_id": arm_id, "session_id": session_id, "log_type": log_type, "finished": finished}
    target = url.rstrip("/") + "/log/"
    try:
        if client is not None:
            response = client.post(target, json=body, timeout=timeout)
        else:
            response = httpx.post(target, json=body, timeout=timeout)
        response.raise_for_status()
        return True
    except httpx.HTTPError as exc:
        log.warning(
            "control panel %s did not take %s/%s %s: %s", target, arm_id, session_id, log_type, exc
        )
        return False
