"""A detector's boxes on their way to sinks: checked once, then laid out per sink.

A detection result is one row per image with a ``boxes`` list. Tabular sinks
usually want one row per box, so that is the default layout; each box row gets
a record id derived from its image's and its index (``box_record_id``), and
every sink already keys what it writes by record id, so a rerun rewrites the
same rows. An image without boxes, and an error row, stay one row with empty
box columns: the image is still accounted for and every row has the same columns.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from infergraph.inference.records import (
    BOX_FIELDS,
    BOX_INDEX,
    BOXES,
    IMAGE_RECORD_ID,
    BoxLayout,
    box_record_id,
)


class BoxesError(ValueError):
    """A predictor returned boxes that do not follow the ``Box`` contract."""


def check_boxes(value: Any) -> None:
    """Raise :class:`BoxesError` naming the first box (and field) that breaks the contract."""
    if not isinstance(value, list):
        raise BoxesError(f"'{BOXES}' must be a list of boxes, got {type(value).__name__}")
    for index, box in enumerate(value):
        if not isinstance(box, Mapping):
            raise BoxesError(f"box {index} is a {type(box).__name__}, not an object")
        missing = [k for k in BOX_FIELDS if k not in box]
        if missing:
            raise BoxesError(f"box {index} lacks {', '.join(missing)} (a box has {BOX_FIELDS})")
        numbers = [box[k] for k in ("score", "x1", "y1", "x2", "y2")]
        if not all(isinstance(n, int | float) and math.isfinite(n) for n in numbers):
            raise BoxesError(f"box {index}: score and coordinates must be finite numbers")
        if box["x2"] < box["x1"] or box["y2"] < box["y1"]:
            raise BoxesError(f"box {index}: x2/y2 must not be less than x1/y1")


def parse_layout(value: str | None, where: str) -> BoxLayout:
    """The ``boxes=`` option's value; ``where`` names the sink in the error."""
    if value is None:
        return BoxLayout.ROWS
    try:
        return BoxLayout(value.strip().lower())
    except ValueError:
        known = ", ".join(m.value for m in BoxLayout)
        raise ValueError(f"{where}: boxes={value!r} is not one of {known}") from None


def lay_out(rows: Iterable[dict[str, Any]], layout: BoxLayout) -> list[dict[str, Any]]:
    """Rows as a sink writes them: rows without a ``boxes`` field pass unchanged."""
    if layout is BoxLayout.JSON:
        return list(rows)
    out: list[dict[str, Any]] = []
    for row in rows:
        if BOXES not in row:
            out.append(row)
            continue
        parent = {k: v for k, v in row.items() if k != BOXES}
        record_id = str(row.get("record_id", ""))
        boxes = row.get(BOXES)
        if not isinstance(boxes, list) or not boxes:
            empty = dict.fromkeys(BOX_FIELDS)
            out.append({**parent, IMAGE_RECORD_ID: record_id, BOX_INDEX: None, **empty})
            continue
        for index, box in enumerate(boxes):
            out.append(
                {
                    **parent,
                    **{k: box.get(k) for k in BOX_FIELDS},
                    "record_id": box_record_id(record_id, index),
                    IMAGE_RECORD_ID: record_id,
                    BOX_INDEX: index,
                }
            )
    return out
