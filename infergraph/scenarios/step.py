"""Run one step (a notebook or a script) on a scenario in a fresh work folder.

The work folder is a copy of the model (its code and baked-in ``inputs/``) with the
scenario's objects downloaded over it, so a step sees ``inputs/…`` and the outputs of
earlier steps where the model's own code expects them. The step runs as a child process
(cwd = its own folder, the work folder on PYTHONPATH) in its own session, so a timeout
kills it and everything it started. Its combined output is the step's log and is stored
before the step is judged; success is the exit code, never a word in the output.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psutil

from infergraph.scenarios.store import ScenarioStore

#: Scenario keys that are run bookkeeping, not inputs: never downloaded into a work folder.
BOOKKEEPING = re.compile(r"^(logs/|status\.json$|run\.json$|\.)")
#: Work-folder paths never uploaded (caches the interpreter or Jupyter leave behind).
NOT_OUTPUTS = {"__pycache__", ".ipynb_checkpoints", ".pytest_cache"}
MODEL_COPY_IGNORE = ("scenarios", ".git", "__pycache__", ".ipynb_checkpoints")


class StepFailed(Exception):
    """A step that exited non-zero, timed out or could not start; its log is stored."""

    def __init__(self, outcome: StepOutcome) -> None:
        self.outcome = outcome
        super().__init__(outcome.error)

    @property
    def error_name(self) -> str:
        return "States.Timeout" if self.outcome.timed_out else "States.TaskFailed"


@dataclass
class StepOutcome:
    state: str
    step: str
    ok: bool
    seconds: float
    log: str  # store location of the log
    returncode: int | None = None
    timed_out: bool = False
    error: str = ""
    outputs: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # files left out of the upload, and why

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def s3_metadata(metadata: dict[str, Any]) -> dict[str, str]:
    """Object metadata S3 accepts: lower-case ASCII keys, ASCII string values."""
    out = {}
    for key, value in metadata.items():
        if value is None:
            continue
        name = re.sub(r"[^a-z0-9-]+", "-", str(key).lower()).strip("-")
        text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        out[name] = quote(text, safe=" @:/.,-_=+{}[]\"'")
    return out


def run_step(
    *,
    model_root: Path,
    store: ScenarioStore,
    scenario: str,
    state: str,
    step: str,
    launcher_arg: Any,
    metadata: dict[str, Any],
    timeout: float,
    log_name: str | None = None,
    keep_work: bool = False,
) -> StepOutcome:
    """Run ``step`` (a path in the model) on ``scenario``; raise StepFailed on failure."""
    log_name = _safe_name(log_name or state)
    log_key = f"{scenario}/logs/{log_name}.txt"
    work = Path(tempfile.mkdtemp(prefix=f"scenario-{_safe_name(scenario)}-{log_name}-"))
    scratch = Path(tempfile.mkdtemp(prefix="scenario-scratch-"))
    log_path = scratch / "log.txt"
    started = time.monotonic()
    outcome = StepOutcome(state, step, False, 0.0, store.location(log_key))
    try:
        shutil.copytree(
            model_root, work, dirs_exist_ok=True, ignore=shutil.ignore_patterns(*MODEL_COPY_IGNORE)
        )
        _download_scenario(store, scenario, work)
        before = _snapshot(work)
        outcome.returncode, outcome.timed_out = _execute(
            work, step, launcher_arg, timeout, log_path, scratch
        )
        outcome.ok = outcome.returncode == 0 and not outcome.timed_out
        if outcome.timed_out:
            outcome.error = f"step {state!r} ({step}) killed at its {timeout:g} s timeout"
        elif not outcome.ok:
            outcome.error = f"step {state!r} ({step}) exited with code {outcome.returncode}"
        meta = s3_metadata({**metadata, "scenario": scenario, "step": state})
        outcome.outputs, outcome.skipped = _upload_outputs(store, scenario, work, before, meta)
        executed = scratch / "executed.ipynb"
        if executed.is_file():
            store.put(f"{scenario}/logs/{log_name}.ipynb", executed.read_bytes(), meta)
    except Exception as exc:  # the step could not even run: say so in its log
        outcome.ok, outcome.error = False, f"step {state!r} ({step}) could not run: {exc}"
    finally:
        outcome.seconds = time.monotonic() - started
        if outcome.error:
            with log_path.open("a") as fh:
                fh.write(f"\n[infergraph] {outcome.error}\n")
        # The log is stored whatever happened, before the step is judged.
        log = log_path.read_bytes() if log_path.exists() else b""
        store.put(log_key, log, s3_metadata({**metadata, "scenario": scenario, "step": state}))
        shutil.rmtree(scratch, ignore_errors=True)
        if not keep_work:
            shutil.rmtree(work, ignore_errors=True)
    if not outcome.ok:
        raise StepFailed(outcome)
    return outcome


def _safe_name(name: str) -> str:
    return re.sub(r"[^\w.@ -]+", "_", name).strip() or "step"


def _download_scenario(store: ScenarioStore, scenario: str, work: Path) -> None:
    prefix = f"{scenario}/"
    for key in store.keys(prefix):
        rel = key[len(prefix) :]
        if BOOKKEEPING.match(rel):
            continue
        target = work / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(store.get(key))


def _execute(
    work: Path, step: str, launcher_arg: Any, timeout: float, log_path: Path, scratch: Path
) -> tuple[int | None, bool]:
    script = work / step
    arg = json.dumps(launcher_arg)
    if script.suffix == ".ipynb":
        cmd = [sys.executable, "-m", "infergraph.scenarios.nbrun", str(script)]
        cmd += [str(scratch / "executed.ipynb"), arg]
    else:
        cmd = [sys.executable, str(script), arg]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(work), *_own_paths(), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
        "PYTHONUNBUFFERED": "1",
        "SCENARIO_WORK_DIR": str(work),
    }
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd,
            cwd=script.parent,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        try:
            return proc.wait(timeout=timeout), False
        except subprocess.TimeoutExpired:
            kill_tree(proc.pid)
            proc.wait()
            return None, True


def _own_paths() -> list[str]:
    """Where infergraph itself is importable from (the notebook runner lives in it)."""
    import infergraph

    return [str(Path(infergraph.__file__).resolve().parent.parent)]


def kill_tree(pid: int) -> None:
    """Kill a process, its process group and every descendant (Jupyter kernels start their
    own session, so the group alone would leave them running)."""
    try:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        procs = []
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, 9)
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(procs, timeout=5)


def _digest(path: Path) -> str:
    h = hashlib.sha1()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _walk(work: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(work):  # followlinks=False
        dirnames[:] = [d for d in dirnames if d not in NOT_OUTPUTS]
        out.extend(Path(dirpath) / f for f in filenames)
    return out


def _snapshot(work: Path) -> dict[str, str]:
    return {p.relative_to(work).as_posix(): _digest(p) for p in _walk(work) if p.is_file()}


def _upload_outputs(
    store: ScenarioStore, scenario: str, work: Path, before: dict[str, str], meta: dict[str, str]
) -> tuple[list[str], list[str]]:
    """Upload new or changed files; links (which may point outside the folder) are skipped."""
    uploaded, skipped = [], []
    root = work.resolve()
    for path in sorted(_walk(work)):
        rel = path.relative_to(work).as_posix()
        if path.is_symlink():
            skipped.append(f"{rel}: a link, not uploaded (may point outside the work folder)")
            continue
        if not path.is_file() or not path.resolve().is_relative_to(root):
            continue
        if BOOKKEEPING.match(rel):
            skipped.append(f"{rel}: a run bookkeeping name, not uploaded")
            continue
        if before.get(rel) == _digest(path):
            continue
        key = f"{scenario}/{rel}"
        store.put(key, path.read_bytes(), meta)
        uploaded.append(key)
    return uploaded, skipped
