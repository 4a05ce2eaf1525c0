"""Command line of the sorting-session flow (``python flows/sessions.py demo|run``).

The flow file passes its flow function in, so this library never imports ``flows``.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from infergraph.cli_errors import UsageParser, command

DB_ENV = "INFERGRAPH_SESSIONS_DB"


@command()
def main(flow_fn: Callable[..., Any], argv: list[str] | None = None) -> int:
    parser = UsageParser(prog="flows/sessions.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="synthetic session end to end (throwaway PostgreSQL)")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--items", type=int, default=12)
    demo.add_argument("--containers", type=int, default=3, choices=(1, 2, 3))
    run = sub.add_parser("run", help="plan one stored session")
    run.add_argument("--arm-id", required=True)
    run.add_argument("--session-id", required=True)
    run.add_argument("--constants", required=True, help="arm constants: a JSON file or object")
    run.add_argument(
        "--database",
        default=os.environ.get(DB_ENV, "sessions-db"),
        help=f"PostgresDatabase block name or URL (default: ${DB_ENV})",
    )
    run.add_argument("--images", default="sessions/", help="folder or s3:// prefix of pictures")
    serve = sub.add_parser("serve", help="the arm's websocket endpoint")
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--port", type=int, default=6000)
    serve.add_argument(
        "--database",
        default=os.environ.get(DB_ENV, "sessions-db"),
        help=f"PostgresDatabase block name or URL (default: ${DB_ENV})",
    )
    serve.add_argument("--images", default="sessions/", help="folder or s3:// prefix of pictures")
    args = parser.parse_args(argv)

    from infergraph.local_prefect import local_settings
    from infergraph.sessions.geometry import ArmConstantsError

    try:
        with local_settings():
            if args.command == "demo":
                return demo_session(flow_fn, args.seed, args.items, args.containers)
            if args.command == "serve":
                return serve_endpoint(flow_fn, args.host, args.port, args.database, args.images)
            text = args.constants
            constants = json.loads(Path(text).read_text() if Path(text).is_file() else text)
            commands = flow_fn(
                arm_id=args.arm_id,
                session_id=args.session_id,
                arm_constants=constants,
                database=args.database,
                images=args.images,
            )
            print(json.dumps(commands))
            return 0
    except (ArmConstantsError, json.JSONDecodeError) as exc:
        parser.exit(1, f"error: {exc}\n")
    except Exception as exc:
        from infergraph.sessions.pgserver import PostgresUnavailable
        from infergraph.sessions.store import StoreError

        if isinstance(exc, PostgresUnavailable | StoreError):
            parser.exit(1, f"error: {exc}\n")
        raise


def demo_session(flow_fn: Callable[..., Any], seed: int, items: int, containers: int) -> int:
    """Generate a session, receive its pictures as the endpoint would, run the flow."""
    from infergraph.sessions.pgserver import ThrowawayPostgres
    from infergraph.sessions.service import ImageVault, parse_frame, receive_image, store_for
    from infergraph.sessions.synthetic import CONSTANTS, session_pictures

    started = time.perf_counter()
    pictures, placed = session_pictures(seed, items, containers)
    database = os.environ.get(DB_ENV)
    server = None if database else ThrowawayPostgres().start()
    try:
        if server is not None:
            database = server.conninfo
            print(f"throwaway PostgreSQL on port {server.port} (set {DB_ENV} to use your own)")
        assert database is not None
        store = store_for(database)
        with tempfile.TemporaryDirectory(prefix="infergraph-session-") as folder:
            vault = ImageVault(folder)
            for name, data in pictures:
                frame = (
                    json.dumps(
                        {
                            "command": "recv_img_proc",
                            "arm_id": "demo-arm",
                            "session_id": f"S{seed}",
                            "image_name": name,
                        }
                    ).encode()
                    + b"___SPLIT___"
                    + data
                )
                receive_image(store, vault, *parse_frame(frame))
            commands = flow_fn(
                arm_id="demo-arm",
                session_id=f"S{seed}",
                arm_constants=CONSTANTS.model_dump(),
                database=database,
                images=folder,
                seed=seed,
            )
        print(
            f"\n{len(commands)} commands for session S{seed} "
            f"({sum(p.class_id == 0 for p in placed)} items and {containers} containers placed):"
        )
        for command in commands:
            print(f"  pick {command[0]} → drop {command[1]}")
        print("table counts:", ", ".join(f"{k} {v}" for k, v in store.counts().items()))
        print(f"done in {time.perf_counter() - started:.1f}s")
        store.close()
        return 0
    finally:
        if server is not None:
            server.close()


def serve_endpoint(
    flow_fn: Callable[..., Any], host: str, port: int, database: str, images: str
) -> int:
    """Serve the arm protocol until interrupted; each session end is a flow run."""
    import asyncio
    import logging

    from infergraph.detection.predictor import Detector
    from infergraph.sessions.endpoint import SessionEndpoint
    from infergraph.sessions.service import ImageVault, store_for

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    detector = Detector()
    detector.load()

    def run_session(arm_id: str, session_id: str, constants: dict[str, Any]) -> Any:
        return flow_fn(
            arm_id=arm_id,
            session_id=session_id,
            arm_constants=constants,
            database=database,
            images=images,
        )

    async def forever() -> None:
        endpoint = SessionEndpoint(store_for(database), ImageVault(images), detector, run_session)
        await endpoint.start(host, port)
        print(f"sorting-arm endpoint on ws://{host}:{port}")
        try:
            await asyncio.Future()
        finally:
            await endpoint.close()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(forever())
    return 0
