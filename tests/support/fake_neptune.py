"""A loopback HTTP server that answers like Neptune's loader and records every request.

Not a mock of boto3: the real ``neptunedata`` client signs and sends real HTTP here, and
the tests read back exactly what went over the wire.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse


@dataclass
class FakeNeptune:
    status_fixture: dict[str, Any]
    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    #: load id → loader status to report (default: the fixture's own)
    statuses: dict[str, str] = field(default_factory=dict)
    next_load_id: str = "a1cac8fa-ad02-4e28-9dc6-12f3e7b57ff8"
    start_error: tuple[int, dict[str, Any]] | None = None
    sparql_count: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def status_payload(self, load_id: str) -> dict[str, Any]:
        data = json.loads(json.dumps(self.status_fixture))
        status = self.statuses.get(load_id, data["payload"]["overallStatus"]["status"])
        data["payload"]["overallStatus"]["status"] = status
        data["payload"]["feedCount"] = [{status: 4}]
        data["payload"]["errors"]["loadId"] = load_id
        if status != "LOAD_COMPLETED" and status not in (
            "LOAD_IN_PROGRESS",
            "LOAD_IN_QUEUE",
            "LOAD_NOT_STARTED",
        ):
            data["payload"]["overallStatus"]["parsingErrors"] = 1
            data["payload"]["errors"]["errorLogs"] = [
                {
                    "errorCode": "PARSING_ERROR",
                    "errorMessage": "Expected '<'",
                    "fileName": "s3://x/data/a.nt",
                    "recordNum": 3,
                }
            ]
        return data


def _handler(fake: FakeNeptune) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _reply(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _record(self) -> dict[str, Any]:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            parsed = urlparse(self.path)
            entry = {
                "method": self.command,
                "path": parsed.path,
                "query": parse_qs(parsed.query),
                "headers": dict(self.headers.items()),
                "body": body,
            }
            with fake.lock:
                fake.requests.append(entry)
            return entry

        def do_POST(self) -> None:
            entry = self._record()
            if entry["path"] == "/loader":
                if fake.start_error:
                    self._reply(*fake.start_error)
                    return
                self._reply(200, {"status": "200 OK", "payload": {"loadId": fake.next_load_id}})
            elif entry["path"] == "/sparql":
                self._reply(
                    200,
                    {
                        "head": {"vars": ["n"]},
                        "results": {
                            "bindings": [
                                {"n": {"type": "literal", "value": str(fake.sparql_count)}}
                            ]
                        },
                    },
                )
            elif entry["path"] == "/gremlin":
                self._reply(
                    200,
                    {
                        "requestId": "r",
                        "status": {"code": 200},
                        "result": {
                            "data": {
                                "@type": "g:List",
                                "@value": [{"@type": "g:Int64", "@value": 7}],
                            }
                        },
                    },
                )
            else:
                self._reply(404, {"code": "NotFound"})

        def do_GET(self) -> None:
            entry = self._record()
            if entry["path"].startswith("/loader/"):
                self._reply(200, fake.status_payload(entry["path"].rsplit("/", 1)[-1]))
            else:
                self._reply(404, {"code": "NotFound"})

        def do_DELETE(self) -> None:
            self._record()
            self._reply(200, {"status": "200 OK"})

    return Handler


@contextmanager
def fake_neptune(fixture: Path) -> Iterator[FakeNeptune]:
    fake = FakeNeptune(json.loads(fixture.read_text()))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
