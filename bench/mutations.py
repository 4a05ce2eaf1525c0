"""Plant realistic one-line bugs where a bug loses users' data, and check the tests catch each.

Every mutant is applied to a fresh copy of the repository in a temporary folder and
the tests named for it run there (``python -m pytest -q -x ...`` with ``PYTHONPATH`` set
to the copy). A mutant is *caught* when those tests fail, *survives* when they pass.
An anchor that is no longer in its file (the code moved on) is reported as a failure of
this script, never as a catch, so drift shows; so are a mutant that does not compile and
a baseline (the unmutated copy) that fails.

    python bench/mutations.py --list
    python bench/mutations.py --only csv-part-drops-row --only notice-claim-skipped
    python bench/mutations.py            # all 21: ~28 min on 2 shared cores (8 the baseline)

Exit status: 0 when every mutant was caught; 1 when one survived; 2 when the script
could not judge one (missing anchor, baseline failing, pytest error).

Why not mutmut or cosmic-ray: both mutate every operator of every line they are
pointed at (hundreds of mutants per module, most of them equivalent or trivial) and
run the whole selected suite per mutant; with moto, a Prefect server and subprocess
runs behind these tests that is hours per module here. This list instead names the
few lines where a plausible slip silently loses data, with the tests that guard them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IGNORED = shutil.ignore_patterns(
    ".git", "__pycache__", "*.pyc", ".pytest_cache", ".ruff_cache", "results", "mutants", ".venv"
)


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str
    original: str  # must occur exactly once in ``file``
    replacement: str
    tests: tuple[str, ...]  # pytest arguments: test files, optionally ``-k`` selections
    loses: str  # what a user would lose if this bug shipped


ENGINE = ("tests/test_engine_units.py",)
SINKS = ("tests/test_aws_sinks.py",)
SOURCES = ("tests/test_aws_sources.py",)
JOBS = ("tests/test_reasoning_jobs.py",)
TOKENS = ("tests/test_api.py", "-k", "bad_tokens or token_flow")

MUTANTS: tuple[Mutant, ...] = (
    # -- acknowledgements: a message deleted before (or without) its results being stored
    Mutant(
        "ack-before-write",
        "infergraph/inference/pipeline.py",
        "        write = self.write.submit(self.sinks, quote(chunks))\n",
        "        self.source.ack([g for c in chunks for g in c.groups])\n"
        "        write = self.write.submit(self.sinks, quote(chunks))\n",
        ENGINE,
        "a message is deleted before its results are written; a crash loses them",
    ),
    Mutant(
        "ack-failed-write",
        "infergraph/inference/pipeline.py",
        'self.source.nack(groups, f"write failed: {type(exc).__name__}: {exc}")',
        "self.source.ack(groups)",
        ENGINE,
        "a message whose write failed is deleted: its requests are never answered",
    ),
    Mutant(
        "write-failure-not-isolated",
        "infergraph/inference/pipeline.py",
        "if len(chunks) > 1 and not is_transient(exc):",
        "if False and len(chunks) > 1 and not is_transient(exc):",
        ENGINE,
        "one bad result fails (and retries, then dead-letters) every message written with it",
    ),
    # -- conditional writes
    Mutant(
        "job-transition-unconditional",
        "infergraph/reasoning/jobs.py",
        'ConditionExpression="#s = :from AND #v = :version",',
        'ConditionExpression="(#s = :from AND #v = :version) OR attribute_exists(#s)",',
        JOBS,
        "a stale run overwrites a job's newer state (a finished job goes back to loading)",
    ),
    Mutant(
        "job-id-overwrite",
        "infergraph/reasoning/jobs.py",
        'ConditionExpression="attribute_not_exists(#pk)",',
        'ConditionExpression="attribute_not_exists(#pk) OR attribute_exists(#pk)",',
        JOBS,
        "two jobs created at once get the same id and one overwrites the other",
    ),
    Mutant(
        "requests-claim-ignores-live-lease",
        "infergraph/inference/requests_table.py",
        "(attribute_not_exists(lease_until) OR lease_until < :now OR processed_by = :run))",
        "(attribute_not_exists(lease_until) OR lease_until > :now OR processed_by = :run))",
        SINKS,
        "two runs process the same request; a held request is taken over",
    ),
    Mutant(
        "requests-finish-overwrites-finished",
        "infergraph/inference/requests_table.py",
        'OPEN_CONDITION = "attribute_not_exists(#state) OR #state IN (:queued, :processing)"',
        'OPEN_CONDITION = "attribute_not_exists(#state) OR #state IN (:queued, :processing) '
        'OR attribute_exists(#state)"',
        SINKS,
        "a late duplicate overwrites a finished request's result",
    ),
    Mutant(
        "requests-write-failure-logged",
        "infergraph/inference/requests_table.py",
        "            raise failures[0]\n",
        '            self._problem(f"{self.name}: {failures[0]}")\n',
        SINKS,
        "the message is deleted while its request stays 'processing' forever",
    ),
    # -- deterministic keys: a rerun must overwrite, not add
    Mutant(
        "result-id-random",
        "infergraph/aws/dynamodb.py",
        'hashlib.sha256(f"{record_id}\\x00{index}".encode()).hexdigest()[:32]',
        "hashlib.sha256(f\"{record_id}\\x00{__import__('uuid').uuid4()}\".encode()).hexdigest()[:32]",
        SINKS,
        "a redelivered message adds duplicate results instead of replacing them",
    ),
    Mutant(
        "batch-key-random",
        "infergraph/inference/tracking.py",
        'hashlib.sha256("\\n".join(r.record_id for r in records).encode()).hexdigest()',
        "hashlib.sha256(f\"{__import__('uuid').uuid4()}\".encode()).hexdigest()",
        ENGINE,
        "a rerun of a listing writes its CSV objects under new names beside the old ones",
    ),
    # -- dead-lettering and visibility
    Mutant(
        "dead-letter-dropped",
        "infergraph/aws/sqs_leases.py",
        "            self._client.send_message(**params)\n",
        "            params.clear()  # the copy is never sent; the original is deleted below\n",
        SOURCES,
        "an unreadable message is deleted instead of moved to the dead-letter queue",
    ),
    Mutant(
        "retry-releases-at-once",
        "infergraph/aws/sqs_leases.py",
        "        delay = self.queue.retry_delay_seconds\n",
        "        delay = 0\n",
        SOURCES,
        "a failing message is retried at once, burning its receives into the dead-letter queue",
    ),
    Mutant(
        "heartbeat-skipped",
        "infergraph/inference/sources/sqs.py",
        "        extended = self.leases.heartbeat()\n",
        "        return None\n",
        SOURCES,
        "a slow message reappears mid-work and is processed twice",
    ),
    # -- the S3 CSV sink
    Mutant(
        "csv-part-drops-row",
        "infergraph/inference/sinks/s3_csv.py",
        "results[i : i + self.rows] for i in range(",
        "results[i : i + self.rows - 1] for i in range(",
        SINKS,
        "every rows-th result silently missing from the CSV parts",
    ),
    # -- notices
    Mutant(
        "notice-claim-skipped",
        "infergraph/reasoning/steps.py",
        "    claimed = store.claim_notice(job, uuid.uuid4().hex, lease)\n",
        "    claimed = job\n",
        ("tests/test_reasoning_neptune.py", "-k", "concurrent_refreshes"),
        "concurrent refreshes send a job's notice more than once",
    ),
    Mutant(
        "notice-claim-ignores-lease",
        "infergraph/reasoning/jobs.py",
        "(attribute_not_exists(notice_claimed_at) OR notice_claimed_at < :expired)",
        "(attribute_not_exists(notice_claimed_at) OR notice_claimed_at > :expired)",
        JOBS,
        "a live notice claim is taken over: duplicate notices",
    ),
    # -- decode limits
    Mutant(
        "pixel-limit-removed",
        "infergraph/inference/decode.py",
        "    if width * height > max_pixels:\n",
        "    if False and width * height > max_pixels:\n",
        ("tests/test_decode.py",),
        "a decompression bomb is decoded (memory exhausted) up to Pillow's far higher guard",
    ),
    # -- token checks
    Mutant(
        "token-expiry-ignored",
        "infergraph/api/auth.py",
        'options={"require": ["exp", "iat", "sub", "iss"]},',
        'options={"require": ["exp", "iat", "sub", "iss"], "verify_exp": False},',
        TOKENS,
        "an expired (leaked) token keeps working",
    ),
    Mutant(
        "token-issuer-ignored",
        "infergraph/api/auth.py",
        "                issuer=self.issuer,\n",
        "                issuer=None,\n",
        TOKENS,
        "a token issued by another service with the same key is accepted",
    ),
    # -- loader status mapping
    Mutant(
        "loader-completed-filed-as-running",
        "infergraph/reasoning/loaders/status.py",
        "LOADER_IN_PROGRESS = frozenset({L.LOAD_NOT_STARTED, L.LOAD_IN_QUEUE, L.LOAD_IN_PROGRESS})",
        "LOADER_IN_PROGRESS = frozenset({L.LOAD_NOT_STARTED, L.LOAD_IN_QUEUE, L.LOAD_IN_PROGRESS, "
        "L.LOAD_COMPLETED})",
        JOBS,
        "a completed load is polled forever and its owner never notified",
    ),
    Mutant(
        "loader-queued-filed-as-ended",
        "infergraph/reasoning/loaders/status.py",
        "LOADER_IN_PROGRESS = frozenset({L.LOAD_NOT_STARTED, L.LOAD_IN_QUEUE, L.LOAD_IN_PROGRESS})",
        "LOADER_IN_PROGRESS = frozenset({L.LOAD_NOT_STARTED, L.LOAD_IN_PROGRESS})",
        JOBS,
        "a queued load is reported as failed while it still runs",
    ),
)


@dataclass
class Outcome:
    mutant: Mutant
    verdict: str  # caught | SURVIVED | ERROR
    detail: str
    seconds: float


def copy_repo(into: Path) -> Path:
    target = into / "repo"
    shutil.copytree(REPO, target, ignore=IGNORED, symlinks=True)
    return target


def run_tests(root: Path, tests: tuple[str, ...], timeout: float) -> tuple[int | None, str]:
    """(pytest exit code or None on timeout, the tail of its output) in the copy at ``root``."""
    env = {**os.environ, "PYTHONPATH": str(root), "PYTHONDONTWRITEBYTECODE": "1"}
    command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests]
    try:
        done = subprocess.run(
            command, cwd=root, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return None, f"no result after {timeout:.0f} s"
    lines = (done.stdout + done.stderr).strip().splitlines()
    return done.returncode, lines[-1] if lines else ""


def apply(root: Path, mutant: Mutant) -> str | None:
    """Plant the mutant in the copy; a reason it could not be planted, else None."""
    path = root / mutant.file
    if not path.is_file():
        return f"file {mutant.file} not found"
    text = path.read_text()
    count = text.count(mutant.original)
    if count != 1:
        where = "not found" if count == 0 else f"found {count} times"
        return f"anchor {where} in {mutant.file}: {mutant.original.strip()!r} (update the list)"
    mutated = text.replace(mutant.original, mutant.replacement)
    try:
        compile(mutated, str(path), "exec")
    except SyntaxError as exc:
        return f"the mutant does not compile: {exc}"
    path.write_text(mutated)
    return None


def judge(mutant: Mutant, timeout: float) -> Outcome:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"mutant-{mutant.name}-") as tmp:
        root = copy_repo(Path(tmp))
        problem = apply(root, mutant)
        if problem:
            return Outcome(mutant, "ERROR", problem, time.monotonic() - started)
        code, tail = run_tests(root, mutant.tests, timeout)
    seconds = time.monotonic() - started
    if code is None:
        return Outcome(mutant, "caught", f"timeout: {tail}", seconds)
    if code == 1:
        return Outcome(mutant, "caught", tail, seconds)
    if code == 0:
        return Outcome(mutant, "SURVIVED", tail, seconds)
    return Outcome(mutant, "ERROR", f"pytest exit {code}: {tail}", seconds)


def baseline(selections: list[tuple[str, ...]], timeout: float) -> list[str]:
    """Problems with the unmutated copy: a failing test would make every mutant look caught."""
    problems = []
    with tempfile.TemporaryDirectory(prefix="mutant-baseline-") as tmp:
        root = copy_repo(Path(tmp))
        for tests in selections:
            started = time.monotonic()
            code, tail = run_tests(root, tests, timeout)
            print(f"  baseline {' '.join(tests)}: {tail} ({time.monotonic() - started:.0f} s)")
            if code != 0:
                problems.append(f"baseline {' '.join(tests)} does not pass: {tail}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", metavar="NAME", help="run this mutant only")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--check", action="store_true", help="only check every anchor applies")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated run")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per pytest run")
    args = parser.parse_args(argv)

    if args.list:
        for m in MUTANTS:
            print(f"{m.name:38} {m.file}\n{'':38} loses: {m.loses}")
        return 0
    chosen = list(MUTANTS)
    if args.only:
        known = {m.name: m for m in MUTANTS}
        unknown = [n for n in args.only if n not in known]
        if unknown:
            print(f"unknown mutant(s) {', '.join(unknown)}; see --list", file=sys.stderr)
            return 2
        chosen = [known[n] for n in args.only]

    if args.check:
        with tempfile.TemporaryDirectory(prefix="mutant-check-") as tmp:
            root = copy_repo(Path(tmp))
            problems = []
            for m in chosen:
                original = (root / m.file).read_text() if (root / m.file).is_file() else ""
                if problem := apply(root, m):
                    problems.append(f"{m.name}: {problem}")
                elif original:
                    (root / m.file).write_text(original)
        print("\n".join(problems) or f"all {len(chosen)} anchors apply")
        return 2 if problems else 0
    started = time.monotonic()
    if not args.no_baseline:
        selections = list(dict.fromkeys(m.tests for m in chosen))
        print(f"baseline: {len(selections)} test selection(s) on the unmutated code")
        problems = baseline(selections, args.timeout)
        if problems:
            print("\n".join(problems), file=sys.stderr)
            return 2
    outcomes = []
    for mutant in chosen:
        outcome = judge(mutant, args.timeout)
        outcomes.append(outcome)
        print(f"{outcome.verdict:8} {mutant.name:38} {outcome.seconds:5.0f} s  {outcome.detail}")
        if outcome.verdict == "SURVIVED":
            print(f"{'':8} would lose: {mutant.loses}")

    caught = sum(o.verdict == "caught" for o in outcomes)
    survived = [o.mutant.name for o in outcomes if o.verdict == "SURVIVED"]
    errors = [o.mutant.name for o in outcomes if o.verdict == "ERROR"]
    print(
        f"\nscore: {caught} of {len(outcomes)} planted bugs caught"
        f" in {time.monotonic() - started:.0f} s"
        + (f"; survived: {', '.join(survived)}" if survived else "")
        + (f"; could not judge: {', '.join(errors)}" if errors else "")
    )
    if errors:
        return 2
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
