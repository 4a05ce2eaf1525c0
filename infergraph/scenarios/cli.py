"""``python flows/scenarios.py demo|run|upload|list|download``: the scenario-run CLI.

The flow file passes its flow in, so runs are Prefect flow runs (visible in the UI)
while this module never imports ``flows``. Mistakes end in a short message, not a
traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from infergraph.cli_errors import UsageParser, command
from infergraph.scenarios.asl import DefinitionError
from infergraph.scenarios.lock import LOCK_NAME, ScenarioBusy
from infergraph.scenarios.model import ModelError, load_model
from infergraph.scenarios.run import STATUS, ScenarioError, ScenarioFailed
from infergraph.scenarios.step import BOOKKEEPING
from infergraph.scenarios.store import ScenarioStore, StoreError, open_store

EXAMPLE_MODEL = Path(__file__).parent / "example_model"
DEMO_CALLER = "demo@example.com"
#: The demo's two runs: base compares two assignment methods (Choice → Parallel),
#: the variant (a bridge closed, 10% more demand) takes the Choice's default path.
DEMO_RUNS = (("base", {"params": {"mode": "compare"}}), ("bridge_closed", {}))
EXPECTED = (
    DefinitionError, ModelError, ScenarioError, ScenarioBusy, ScenarioFailed, StoreError,
    FileNotFoundError,
)  # fmt: skip


def upload(
    store: ScenarioStore, model_root: Path, names: Sequence[str] = (), force: bool = False
) -> list[str]:
    """Replace each scenario's objects with the model's ``scenarios/<name>/`` (base first).

    ``base`` is read-only to users: it is only overwritten with ``force``.
    """
    model = load_model(model_root)
    folders = model.scenario_folders()
    if names:
        unknown = set(names) - {f.name for f in folders}
        if unknown:
            raise ScenarioError(f"no scenarios/{sorted(unknown)[0]}/ folder in {model.root}")
        folders = [f for f in folders if f.name in names]
    if not folders:
        raise ScenarioError(f"{model.root} has no scenarios/<name>/ folders to upload")
    done = []
    for folder in folders:
        prefix = f"{folder.name}/"
        existing = store.keys(prefix)
        if folder.name == "base" and existing and not force:
            raise ScenarioError(
                f"scenario 'base' already exists in {store.uri} and is read-only: "
                "pass --force to replace it"
            )
        if any(k.endswith(LOCK_NAME) for k in existing):
            raise ScenarioBusy(f"scenario {folder.name!r} is running: upload it when it ends")
        uploaded = set()
        for path in sorted(folder.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                key = prefix + path.relative_to(folder).as_posix()
                store.put(key, path.read_bytes())
                uploaded.add(key)
        stale = [k for k in existing if k not in uploaded]
        if stale:
            store.delete(stale)
        done.append(f"{folder.name}: {len(uploaded)} file(s) -> {store.location(prefix)}")
    return done


def scenarios(store: ScenarioStore) -> list[dict[str, Any]]:
    """Every scenario in the store with its last run's status.json (if any)."""
    names = sorted({k.split("/", 1)[0] for k in store.keys("") if "/" in k})
    out = []
    for name in names:
        try:
            status = json.loads(store.get(f"{name}/{STATUS}"))
        except (StoreError, ValueError):
            status = {}
        out.append({"scenario": name, **status})
    return out


def download(store: ScenarioStore, scenario: str, dest: Path, everything: bool = False) -> int:
    """A scenario's outputs, logs and status (``everything``: its inputs too) into ``dest``."""
    keys = [k for k in store.keys(f"{scenario}/") if not k.split("/", 1)[1].startswith(".")]
    if not keys:
        raise ScenarioError(f"scenario {scenario!r} does not exist in {store.uri}")
    count = 0
    for key in keys:
        rel = key.split("/", 1)[1]
        if not everything and rel.startswith("inputs/"):
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(store.get(key))
        count += 1
    return count


def report(status: dict[str, Any], out: Any = sys.stdout) -> None:
    """Each step's outcome, time, log and outputs."""
    print(f"scenario {status.get('scenario')}: {status.get('state')}", file=out)
    for step in status.get("steps", []):
        seconds = step.get("seconds") or 0.0
        print(f"  {step['state']:<22} {step['status']:<9} {seconds:6.2f} s", file=out)
        if step.get("log"):
            print(f"      log: {step['log']}", file=out)
        for key in step.get("outputs", []):
            print(f"      out: {key}", file=out)
        if step.get("error"):
            print(f"      error: {step['error']}", file=out)


def _parser() -> argparse.ArgumentParser:
    parser = UsageParser(prog="python flows/scenarios.py", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def store_args(p: argparse.ArgumentParser, required: bool = True) -> None:
        p.add_argument("--store", required=required, help="s3://bucket[/prefix] or a folder")
        p.add_argument("--aws-credentials", default=None, help="AwsCredentials block name")

    demo = sub.add_parser("demo", help="run the example model's base and a variant locally")
    demo.add_argument("--store", default=None, help="folder to use (default: a new temp folder)")
    run = sub.add_parser("run", help="run a scenario of a model folder")
    run.add_argument("model", help="model folder (with step-functions.json or steps.yaml)")
    run.add_argument("scenario")
    store_args(run)
    run.add_argument("--launcher-arg", default="{}", help="JSON given to every step")
    run.add_argument("--caller", default=None, help="who runs it (for Authorization)")
    run.add_argument("--no-auth", action="store_true", help="skip the Authorization check")
    run.add_argument("--queue", action="store_true", help="wait if the scenario is running")
    up = sub.add_parser("upload", help="replace scenarios in the store with scenarios/<name>/")
    up.add_argument("model")
    up.add_argument("scenarios", nargs="*", help="names (default: all, base first)")
    store_args(up)
    up.add_argument("--force", action="store_true", help="allow replacing base")
    ls = sub.add_parser("list", help="scenarios in the store and their last run's status")
    store_args(ls)
    down = sub.add_parser("download", help="a scenario's outputs and logs")
    down.add_argument("scenario")
    down.add_argument("dest", type=Path)
    store_args(down)
    down.add_argument("--inputs", action="store_true", help="include inputs/")
    return parser


@command()
def main(argv: Sequence[str], flow: Callable[..., dict[str, Any]]) -> int:
    args = _parser().parse_args(argv)
    try:
        return _dispatch(args, flow)
    except EXPECTED as exc:
        if isinstance(exc, ScenarioFailed):
            report(exc.status, sys.stderr)
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _dispatch(args: argparse.Namespace, flow: Callable[..., dict[str, Any]]) -> int:
    if args.command == "demo":
        return demo(flow, args.store)
    store = open_store(args.store, args.aws_credentials)
    if args.command == "run":
        status = flow(
            model=str(Path(args.model).resolve()),
            scenario=args.scenario,
            launcher_arg=args.launcher_arg,
            store=args.store,
            aws_credentials=args.aws_credentials,
            caller=args.caller,
            authorize=not args.no_auth,
            queue=args.queue,
        )
        report(status)
    elif args.command == "upload":
        for line in upload(store, Path(args.model), args.scenarios, args.force):
            print(line)
    elif args.command == "list":
        for row in scenarios(store):
            print(
                f"{row['scenario']:<24} {row.get('state') or 'never run':<10} "
                f"{row.get('finished') or row.get('started') or '':<26} {row.get('step') or ''}"
            )
    elif args.command == "download":
        count = download(store, args.scenario, args.dest, args.inputs)
        print(f"{count} file(s) -> {args.dest}")
    return 0


def demo(flow: Callable[..., dict[str, Any]], folder: str | None = None) -> int:
    """Upload the example model's scenarios to a local folder store and run two of them."""
    root = Path(folder or tempfile.mkdtemp(prefix="infergraph-scenarios-demo-")).resolve()
    store = open_store(str(root))
    print(f"store: {root}")
    for line in upload(store, EXAMPLE_MODEL, force=True):
        print(f"uploaded {line}")
    for scenario, launcher_arg in DEMO_RUNS:
        started = time.monotonic()
        status = flow(
            model=str(EXAMPLE_MODEL),
            scenario=scenario,
            launcher_arg=launcher_arg,
            store=str(root),
            caller=DEMO_CALLER,
        )
        report(status)
        print(f"  ({time.monotonic() - started:.1f} s)")
    summary = [k for k in store.keys("") if k.endswith("outputs/summary.csv")]
    for key in summary:
        print(f"\n{store.location(key)}:\n{store.get(key).decode().strip()}")
    return 0


__all__ = ["BOOKKEEPING", "demo", "download", "main", "scenarios", "upload"]
