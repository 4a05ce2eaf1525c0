"""Result rows as DynamoDB items: flattened, typed, keyed by identity.

DynamoDB has no float type (numbers must be ``Decimal``), no NaN, a limited
exponent range and a 400 KB item limit; nested objects are flattened into
``parent__child`` attributes so that every value can be queried and projected.
The key of a result item comes from the record's identity, never from its
content: a rerun that computes a slightly different score overwrites the old
item instead of adding a second one.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

SEPARATOR = "__"
#: DynamoDB's item limit is 400 KB; JSON text over-estimates an item's size.
MAX_ITEM_BYTES = 400 * 1024
_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def flatten(row: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a__b": 1}``; lists and empty objects stay as they are."""
    flat: dict[str, Any] = {}
    for key, value in row.items():
        name = f"{prefix}{SEPARATOR}{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, name))
        else:
            flat[name] = value
    return flat


def to_dynamo(value: Any) -> Any:
    """A value boto3 can serialise: floats as ``Decimal``, non-finite floats as strings."""
    if isinstance(value, bool) or value is None or isinstance(value, str | int | Decimal):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value != 0 and abs(value) < 1e-128:
            return Decimal(0)  # below DynamoDB's smallest magnitude
        if abs(value) >= 1e125:
            return str(value)  # above its largest
        return Decimal(repr(value))
    if isinstance(value, Mapping):
        return {str(k): to_dynamo(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_dynamo(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if hasattr(value, "item"):  # numpy / torch scalars
        return to_dynamo(value.item())
    return str(value)


def serialize(item: Mapping[str, Any]) -> dict[str, Any]:
    """An item in the low-level client's attribute-value format."""
    return {k: _serializer.serialize(to_dynamo(v)) for k, v in item.items()}


def deserialize(item: Mapping[str, Any]) -> dict[str, Any]:
    """An item from the low-level client as Python values (numbers as ``Decimal``)."""
    return {k: _deserializer.deserialize(v) for k, v in item.items()}


def plain(value: Any) -> Any:
    """Deserialised values as JSON-able Python: ``Decimal`` → int or float, sets → lists."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | set):
        return [plain(v) for v in value]
    return value


def serialize_typed(item: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`serialize` for an item whose values already went through :func:`to_dynamo`."""
    return {k: _serializer.serialize(v) for k, v in item.items()}


def result_id(record_id: str, index: int = 0) -> str:
    """A short, stable id for the ``index``-th result item of a record."""
    return hashlib.sha256(f"{record_id}\x00{index}".encode()).hexdigest()[:32]


def item_bytes(item: Mapping[str, Any]) -> int:
    """An upper estimate of the item's stored size."""
    return len(json.dumps(item, default=str).encode())


def explode(
    row: Mapping[str, Any], field: str, copy: tuple[str, ...] | None
) -> Iterator[dict[str, Any]]:
    """One item per element of ``row[field]``, with the chosen parent fields copied in.

    ``copy=None`` copies every other top-level field. A row without elements (for
    example an error row) still gives one item, so its error is not lost.
    """
    names = [k for k in row if k != field] if copy is None else [k for k in copy if k in row]
    parent = {k: row[k] for k in names}
    elements = row.get(field)
    if not isinstance(elements, list) or not elements:
        yield {**flatten(parent), "item_index": 0}
        return
    for index, element in enumerate(elements):
        body = element if isinstance(element, Mapping) else {"value": element}
        yield {**flatten(parent), **flatten(body), "item_index": index}
