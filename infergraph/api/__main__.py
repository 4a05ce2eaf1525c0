"""``python -m infergraph.api``: serve the prediction API with uvicorn.

Configuration comes from ``INFERGRAPH_API_*`` variables (see
:mod:`infergraph.api.settings`); the flags here only override where it listens and
which proxies it trusts. Unsafe settings (the default signing key without
``INFERGRAPH_API_DEV=1``, no users) stop it before anything is loaded. Connections
are served by :class:`infergraph.api.connections.GuardedH11Protocol` (deadlines on
headers and bodies, a cap on open connections).
"""

from __future__ import annotations

import copy
import sys

import uvicorn
from pydantic import ValidationError

from infergraph.api.connections import ConnectionLimits, GuardedH11Protocol
from infergraph.api.settings import ApiSettings, SettingsError, check_settings
from infergraph.cli_errors import UsageParser, command


@command(prefect=False)
def main(argv: list[str] | None = None) -> int:
    parser = UsageParser(
        prog="python -m infergraph.api",
        description="Serve the prediction API (configured by INFERGRAPH_API_* variables).",
    )
    parser.add_argument("--host", help="interface (default INFERGRAPH_API_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default INFERGRAPH_API_PORT or 8000)")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes, each with its own model copy and micro-batcher (default 1)",
    )
    parser.add_argument(
        "--forwarded-allow-ips",
        help="proxies whose X-Forwarded-For is trusted, comma-separated, '*' for any "
        "(default INFERGRAPH_API_FORWARDED_ALLOW_IPS; empty: trust none)",
    )
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    try:
        settings = ApiSettings()
        check_settings(settings)
    except (SettingsError, ValidationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    log_config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    log_config["loggers"]["api"] = {"handlers": ["default"], "level": args.log_level.upper()}
    forwarded = (
        args.forwarded_allow_ips
        if args.forwarded_allow_ips is not None
        else settings.forwarded_allow_ips
    ).strip()
    uvicorn.run(
        "infergraph.api.app:create_app",
        factory=True,
        host=args.host or settings.host,
        port=args.port if args.port is not None else settings.port,
        workers=args.workers,
        log_level=args.log_level,
        log_config=log_config,
        proxy_headers=bool(forwarded),
        forwarded_allow_ips=forwarded or None,
        http=GuardedH11Protocol.with_limits(ConnectionLimits.from_settings(settings)),
        timeout_keep_alive=settings.keep_alive_seconds,
        timeout_graceful_shutdown=30,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
