"""What an SQS message body asks for: image requests or S3 event notifications.

Accepted bodies:

- a JSON list of request objects, or a single request object; each names its
  image under the first of ``image_keys`` that it has (dotted paths such as
  ``image.s3_uri`` reach into nested objects), and all its fields are carried
  into the result;
- an S3 event notification (``Records[].s3``; keys are URL-encoded, so they are
  decoded with ``unquote_plus``), also when wrapped in an SNS envelope (S3 →
  SNS → SQS) or sent by EventBridge; ``s3:TestEvent`` carries nothing to do.

Each request parsed from an S3 event also carries the object it names
(:class:`S3Object`: size, ETag, sequencer, version), which the S3 events bridge
turns into Prefect events.

A request that cannot be used (no image key, not an ``s3://`` URI) becomes an
error for that request alone; a body that cannot be read at all raises
:class:`MalformedMessage`, so the caller can set the message aside.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

DEFAULT_IMAGE_KEYS = ("s3_uri", "image_uri", "uri")


class MalformedMessage(ValueError):
    """A message body that carries no readable request."""


@dataclass(frozen=True, slots=True)
class S3Object:
    """An object an S3 event says was created: the key decoded, the rest as S3 sent it.

    ``event_name`` is in the notification form (``ObjectCreated:Put``) for EventBridge
    events too; ``sequencer`` orders (and tells apart) events for one key.
    """

    bucket: str
    key: str
    size: int | None = None
    etag: str = ""
    event_name: str = ""
    event_time: Any = None
    sequencer: str = ""
    version_id: str = ""


@dataclass(frozen=True, slots=True)
class Request:
    """One image asked for by a message: its URI, the request's fields, or why it is unusable.

    ``record_id`` is the request's identity where the body gives one (a
    ``request_id``, or the object of an S3 event); empty otherwise.
    """

    uri: str
    fields: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    record_id: str = ""
    s3: S3Object | None = None


@dataclass(frozen=True, slots=True)
class ParsedBody:
    """The requests in a body; ``ignored`` says why a valid body asks for nothing."""

    requests: list[Request]
    ignored: str | None = None


def parse_body(
    body: str,
    image_keys: tuple[str, ...] = DEFAULT_IMAGE_KEYS,
    suffixes: tuple[str, ...] = (),
    each_key: bool = False,
) -> ParsedBody:
    """Parse one message body; ``suffixes`` (lower-case) filters S3 event keys.

    ``each_key``: a request gives one image per key of ``image_keys`` (each one
    required, as the reference CLI's ``REQUEST_S3URI_KEYS``), instead of the first
    key it has; each record's fields then name its key in ``current_s3uri_key``.
    """
    data = _load(body)
    if _is_sns_envelope(data):
        data = _load(data["Message"], "the SNS envelope's Message")
    if isinstance(data, dict):
        if data.get("Event") == "s3:TestEvent":
            return ParsedBody([], ignored="S3 test event")
        if _is_s3_event(data):
            return _s3_event(data["Records"], suffixes)
        if data.get("source") == "aws.s3" and isinstance(data.get("detail"), dict):
            return _eventbridge_event(data, suffixes)
        data = [data]
    if not isinstance(data, list):
        raise MalformedMessage(
            f"body is a JSON {_json_type(data)}; expected a request object, a list of them "
            "or an S3 event notification"
        )
    if not data:
        raise MalformedMessage("body is an empty list: no requests")
    if each_key:
        return ParsedBody(
            [r for i, item in enumerate(data) for r in _each_key(item, i, len(data), image_keys)]
        )
    return ParsedBody([_request(item, i, len(data), image_keys) for i, item in enumerate(data)])


def _load(text: Any, what: str = "body") -> Any:
    if not isinstance(text, str):
        raise MalformedMessage(f"{what} is not a string")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise MalformedMessage(
            f"{what} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None


def _is_sns_envelope(data: Any) -> bool:
    return (
        isinstance(data, dict)
        and data.get("Type") == "Notification"
        and "TopicArn" in data
        and isinstance(data.get("Message"), str)
    )


def _is_s3_event(data: dict[str, Any]) -> bool:
    records = data.get("Records")
    return (
        isinstance(records, list)
        and bool(records)
        and all(isinstance(r, dict) and isinstance(r.get("s3"), dict) for r in records)
    )


def _s3_event(records: list[dict[str, Any]], suffixes: tuple[str, ...]) -> ParsedBody:
    requests: list[Request] = []
    skipped: list[str] = []
    for record in records:
        event = str(record.get("eventName", ""))
        try:
            bucket = record["s3"]["bucket"]["name"]
            key = unquote_plus(record["s3"]["object"]["key"])
        except (KeyError, TypeError) as exc:
            raise MalformedMessage(f"S3 event record without {exc}") from None
        if event and not event.startswith("ObjectCreated"):
            skipped.append(f"{event} s3://{bucket}/{key}")
            continue
        if suffixes and not key.lower().endswith(suffixes):
            skipped.append(f"s3://{bucket}/{key} (suffix)")
            continue
        uri = f"s3://{bucket}/{key}"
        fields = {"s3_uri": uri, "event_name": event, "event_time": record.get("eventTime")}
        obj = record["s3"]["object"]
        s3 = S3Object(
            bucket,
            key,
            _size(obj.get("size")),
            str(obj.get("eTag") or obj.get("etag") or ""),
            event,
            record.get("eventTime"),
            str(obj.get("sequencer") or ""),
            str(obj.get("versionId") or ""),
        )
        requests.append(Request(uri, fields, record_id=uri, s3=s3))
    ignored = None if requests else "no image objects in the event: " + ", ".join(skipped)
    return ParsedBody(requests, ignored)


def _eventbridge_event(data: dict[str, Any], suffixes: tuple[str, ...]) -> ParsedBody:
    """EventBridge's S3 events carry one object each, its key not URL-encoded."""
    detail = data["detail"]
    try:
        bucket = detail["bucket"]["name"]
        key = detail["object"]["key"]
    except (KeyError, TypeError) as exc:
        raise MalformedMessage(f"EventBridge S3 event without {exc}") from None
    uri = f"s3://{bucket}/{key}"
    if data.get("detail-type") != "Object Created":
        return ParsedBody([], ignored=f"{data.get('detail-type')} {uri}")
    if suffixes and not key.lower().endswith(suffixes):
        return ParsedBody([], ignored=f"{uri} does not end in an image suffix")
    fields = {"s3_uri": uri, "event_name": "Object Created", "event_time": data.get("time")}
    obj = detail["object"]
    s3 = S3Object(
        bucket,
        key,
        _size(obj.get("size")),
        str(obj.get("etag") or obj.get("eTag") or ""),
        _eventbridge_event_name(str(detail.get("reason") or "")),
        data.get("time"),
        str(obj.get("sequencer") or ""),
        str(obj.get("version-id") or ""),
    )
    return ParsedBody([Request(uri, fields, record_id=uri, s3=s3)])


#: EventBridge's ``detail.reason`` for a created object, as the notification's event name.
_EVENTBRIDGE_REASONS = {
    "PutObject": "Put",
    "PostObject": "Post",
    "CopyObject": "Copy",
    "CompleteMultipartUpload": "CompleteMultipartUpload",
}


def _eventbridge_event_name(reason: str) -> str:
    if reason in _EVENTBRIDGE_REASONS:
        return f"ObjectCreated:{_EVENTBRIDGE_REASONS[reason]}"
    return reason if reason.startswith("ObjectCreated") else "ObjectCreated:*"


def _size(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _request(item: Any, index: int, count: int, image_keys: tuple[str, ...]) -> Request:
    where = f"request {index + 1} of {count}"
    if not isinstance(item, dict):
        return Request("", {}, f"{where} is a JSON {_json_type(item)}, not an object")
    request = _find_image(item, where, image_keys)
    if item.get("request_id") not in (None, ""):
        return Request(
            request.uri, item, request.error, record_id=f"{item['request_id']}|{request.uri}"
        )
    return request


def _each_key(item: Any, index: int, count: int, image_keys: tuple[str, ...]) -> list[Request]:
    """One request per image key, each with its own identity and, if unusable, its own error."""
    where = f"request {index + 1} of {count}"
    if not isinstance(item, dict):
        return [Request("", {}, f"{where} is a JSON {_json_type(item)}, not an object")]
    requests = []
    request_id = item.get("request_id")
    for key in image_keys:
        found = _find_image(item, where, (key,))
        fields = {**item, CURRENT_KEY_FIELD: key}
        record_id = f"{request_id}|{key}|{found.uri}" if request_id not in (None, "") else ""
        requests.append(Request(found.uri, fields, found.error, record_id=record_id))
    return requests


#: With ``each_key``, the field naming the request key a record's image came from.
CURRENT_KEY_FIELD = "current_s3uri_key"


def _find_image(item: dict[str, Any], where: str, image_keys: tuple[str, ...]) -> Request:
    for key in image_keys:
        found, value = lookup(item, key)
        if not found or value in (None, ""):
            continue
        if not isinstance(value, str):
            return Request("", item, f"{where}: {key!r} is a {_json_type(value)}, not a URI")
        if not value.startswith("s3://") or "/" not in value[5:] or value.endswith("/"):
            return Request(
                value, item, f"{where}: {key!r} is {value!r}, not an s3://bucket/key URI"
            )
        return Request(value, item)
    keys = ", ".join(repr(k) for k in image_keys)
    return Request("", item, f"{where} has no image URI under any of {keys}")


def lookup(data: dict[str, Any], path: str) -> tuple[bool, Any]:
    """``data[path]``, else follow a dotted path (``image.s3_uri``) into nested objects."""
    if path in data:
        return True, data[path]
    value: Any = data
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return False, None
        value = value[part]
    return True, value


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")
