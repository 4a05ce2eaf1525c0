"""Benchmark: whole-process wall time of a local run against a bare script and Ray Data.

    python bench/startup.py                                   # both jobs, each case twice (~8 min)
    python bench/startup.py --job digits -n 300 --repeat 1    # a smoke test
    python bench/startup.py --job resnet --photos 16 --repeat 1

Issue 15's two jobs, each engine on the same files with the same predictor class:

- digits: 5,000 digit PNGs, the digits model (decode-bound);
- resnet: 400 photo-like JPEGs of 256×256, ResNet-18 with random weights (compute-bound).

What a user waits for, from typing the command to the prompt coming back, per job:

- bare: a plain batched script (decode + predict + CSV, no Prefect), batch 64;
- flow, no server: ``python flows/inference.py <folder> --predictor … --sink out.csv`` at
  its default settings with nothing configured (Prefect's temporary server);
- flow, kept server: the same with ``python -m infergraph.prefect_server start`` up;
- Ray Data ``map_batches``, batch 64, if ``ray`` imports (``pip install -e '.[bench]'``).

Every run is a fresh process and must write one CSV row per image (checked). Each job starts
from a fresh PREFECT_HOME, so a case's first run is "cold" (the no-server flow's also migrates
a new database); "warm" is its best run. Ratios are against the bare script and Ray Data of
the same run. The in-pipeline images/s is the flow's own summary line, and the time after
start-up for the bare loop (model loaded) and Ray (``ray.init`` done). Children get
``OMP_NUM_THREADS=1`` alike (a shared machine). Writes bench/out/startup.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO), str(HERE)]

from bench.harness import (  # noqa: E402  (needs REPO on the path)
    count_rows,
    digit_samples,
    image_folder,
    make_photos,
    summary_rate,
)

BARE, NO_SERVER, KEPT, RAY = "bare script", "flow, no server", "flow, kept server", "ray data"
FLOWS = (NO_SERVER, KEPT)
COLUMNS = [  # title, key, width
    ("cold s", "cold_seconds", 8),
    ("×bare", "cold_to_bare", 7),
    ("×ray", "cold_to_ray", 7),
    ("warm s", "warm_seconds", 9),
    ("×bare", "warm_to_bare", 7),
    ("×ray", "warm_to_ray", 7),
    ("in-pipeline img/s", "pipeline_images_per_second", 19),
    ("×bare", "pipeline_to_bare", 7),
]


@dataclass(frozen=True)
class Job:
    what: str
    predictor: str
    make: Callable[[Path, int], Path]
    #: Issue 15's targets: the most a flow case's warm wall time may be × bare, and the least
    #: its in-pipeline rate must be × the bare loop's.
    max_wall_ratio: dict[str, float]
    min_pipeline_ratio: float


JOBS = {
    "digits": Job(
        "digit PNGs, digits model",
        "infergraph.predictors.digits:DigitsClassifier",
        lambda folder, n: image_folder(folder, digit_samples(), n, link=False),
        {NO_SERVER: 2.0, KEPT: 1.3},
        0.85,
    ),
    "resnet": Job(
        "JPEGs 256×256, ResNet-18",
        "resnet:ResNet18Predictor",
        lambda folder, n: make_photos(folder, n, 256, 256)[0].parent,
        {},
        0.95,
    ),
}


# -- child scripts (run in fresh interpreters; each prints one JSON line) -------------------


def csv_row(uri: str, row: dict[str, Any]) -> dict[str, Any]:
    """A result row with nested values (top-k lists) as JSON text, as a CSV holds them."""
    flat = {k: v if isinstance(v, str | int | float) else json.dumps(v) for k, v in row.items()}
    return {"uri": uri, **flat}


def bare(folder: str, out: str, batch_size: int, predictor_path: str) -> dict[str, Any]:
    """A plain script: decode, predict and write a CSV, batch by batch, in one thread."""
    import csv

    from bench.bare import run_batches
    from infergraph.inference.decode import decode_image
    from infergraph.predictors.loading import PredictorSpec, get_predictor

    predictor = get_predictor(PredictorSpec(path=predictor_path))
    paths = sorted(Path(folder).iterdir())
    started = time.perf_counter()
    with open(out, "w", newline="") as handle:
        writer: csv.DictWriter[str] | None = None

        def write(chunk: list[Path], rows: list[dict[str, Any]]) -> None:
            nonlocal writer
            for path, row in zip(chunk, rows, strict=True):
                line = csv_row(str(path), row)
                if writer is None:
                    writer = csv.DictWriter(handle, fieldnames=list(line), extrasaction="ignore")
                    writer.writeheader()
                writer.writerow(line)

        done = run_batches(
            predictor,
            paths,
            batch_size,
            lambda p, meta: predictor.preprocess_input(decode_image(p.read_bytes(), str(p)), meta),
            write,
        )
    return {"images": done, "seconds": time.perf_counter() - started}


def ray_data(folder: str, out: str, batch_size: int, predictor_path: str) -> dict[str, Any]:
    """Ray Data's ``map_batches`` over the same files with the same predictor."""
    import ray

    from bench.bare import predict_rows
    from infergraph.inference.decode import decode_image
    from infergraph.predictors.base import RecordMeta
    from infergraph.predictors.loading import PredictorSpec, get_predictor

    class Classify:
        def __init__(self) -> None:
            self.predictor = get_predictor(PredictorSpec(path=predictor_path))

        def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
            p = self.predictor
            metas = [RecordMeta(str(path), str(path)) for path in batch["path"]]
            inputs = [
                p.preprocess_input(decode_image(b, m.uri), m)
                for b, m in zip(batch["bytes"], metas, strict=True)
            ]
            rows = [
                csv_row(m.uri, r)
                for m, r in zip(metas, predict_rows(p, inputs, metas), strict=True)
            ]
            return {key: [r[key] for r in rows] for key in rows[0]}

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    started = time.perf_counter()
    data = ray.data.read_binary_files(folder, include_paths=True)
    data = data.map_batches(Classify, batch_size=batch_size, concurrency=1)
    data.write_csv(out)
    return {"images": count_rows(Path(out)), "seconds": time.perf_counter() - started}


# -- the comparison ---------------------------------------------------------------------------


def run(command: list[str], env: dict[str, str], cwd: Path) -> tuple[float, str, str]:
    """Wall seconds of ``command`` from start to exit, its stdout and stderr; fails loudly."""
    started = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])} failed:\n{done.stderr[-3000:]}")
    return wall, done.stdout, done.stderr


def child_rate(stdout: str) -> float:
    """The in-pipeline rate from a child's JSON line (the last line starting with ``{``)."""
    line = [x for x in stdout.splitlines() if x.startswith("{")][-1]
    result = json.loads(line)
    return result["images"] / result["seconds"]


def run_job(name: str, count: int, args: argparse.Namespace) -> dict[str, Any]:
    """Every case of one job, in a work folder and Prefect home of its own."""
    job = JOBS[name]
    work = Path(tempfile.mkdtemp(prefix=f"startup-{name}-"))
    folder = job.make(work / "images", count)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_")}
    env |= {
        "PYTHONPATH": os.pathsep.join([str(REPO), str(HERE)]),
        "OMP_NUM_THREADS": "1",
        "PREFECT_HOME": str(work / "prefect"),
        "INFERGRAPH_HOME": str(work / "home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    me = [sys.executable, __file__, "--child"]
    flow = [sys.executable, str(REPO / "flows" / "inference.py"), str(folder)]
    batch = str(args.batch_size)
    runs: dict[str, list[dict[str, Any]]] = {}

    def measure(case: str, command: list[str]) -> None:
        for i in range(args.repeat):
            run_dir = work / f"{case.replace(' ', '-').replace(',', '')}-{i}"
            run_dir.mkdir()
            out = run_dir / "out.csv"
            wall, stdout, stderr = run(
                [c.replace("{out}", str(out)) for c in command], env, run_dir
            )
            if case == KEPT and "temporary Prefect server" in stderr:
                raise SystemExit(f"{case} started a temporary server instead:\n{stderr[-2000:]}")
            rows = count_rows(out)
            if rows < count:
                raise SystemExit(f"{case} wrote {rows} result rows for {count} images ({out})")
            rate = summary_rate(stdout + stderr) if case in FLOWS else child_rate(stdout)
            runs.setdefault(case, []).append({"wall_seconds": round(wall, 2), "rate": rate})
            shown = f"{rate:7.1f} images/s in-pipeline" if rate else "no summary line"
            print(f"  {case:<18} run {i + 1}: {wall:6.2f} s  ({shown})", flush=True)

    print(f"\n{name}: {count} {job.what}; bare and Ray at batch {batch}, the flow at its defaults")
    measure(BARE, [*me, "bare", str(folder), "{out}", batch, job.predictor])
    flow_args = ["--predictor", job.predictor, "--sink", "{out}"]
    measure(NO_SERVER, [*flow, *flow_args])
    server = [sys.executable, "-m", "infergraph.prefect_server"]
    port = ["--port", str(_free_port())]
    started = time.perf_counter()
    run([*server, "start", *port], env, work)
    server_start = time.perf_counter() - started
    print(f"  (kept server started in {server_start:.1f} s)", flush=True)
    try:
        measure(KEPT, [*flow, *flow_args])
    finally:
        run([*server, "stop", *port], env, work)
    if _ray_imports():
        measure(RAY, [*me, "ray", str(folder), "{out}", batch, job.predictor])
    else:
        print("  ray not installed: pip install -e '.[bench]'")
    shutil.rmtree(work, ignore_errors=True)
    return {"images": count, "kept_server_start_seconds": round(server_start, 2)} | summarise(
        job, runs
    )


def summarise(job: Job, runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Cold and warm walls, their ratios to bare and Ray, in-pipeline rates; prints the table."""
    cold = {case: r[0]["wall_seconds"] for case, r in runs.items()}
    warm = {case: min(x["wall_seconds"] for x in r) for case, r in runs.items()}
    rate = {case: max((x["rate"] or 0.0) for x in r) or None for case, r in runs.items()}

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 2) if a and b else None

    cases: dict[str, Any] = {}
    print("\n  " + f"{'case':<18}" + "".join(f"{title:>{w}}" for title, _, w in COLUMNS))
    for case in runs:
        row = {
            "walls": [x["wall_seconds"] for x in runs[case]],
            "cold_seconds": cold[case],
            "cold_to_bare": ratio(cold[case], cold[BARE]),
            "cold_to_ray": ratio(cold[case], cold.get(RAY)),
            "warm_seconds": warm[case],
            "warm_to_bare": ratio(warm[case], warm[BARE]),
            "warm_to_ray": ratio(warm[case], warm.get(RAY)),
            "pipeline_images_per_second": rate[case] and round(rate[case], 1),
            "pipeline_to_bare": ratio(rate[case], rate[BARE]),
        }
        cases[case] = row
        print(f"  {case:<18}" + "".join(_show(row[key], w) for _, key, w in COLUMNS))
    targets: dict[str, Any] = {}

    def target(text: str, got: float | None, met: bool) -> None:
        targets[text] = {"value": got, "met": met}
        print(f"  target {text}: {_show(got, 0)} {'met' if met else 'MISSED'}")

    print()
    for case in FLOWS:
        row = cases[case]
        if case in job.max_wall_ratio:
            limit = job.max_wall_ratio[case]
            got = row["warm_to_bare"]
            target(f"{case}, warm wall ≤ {limit}× bare", got, got is not None and got <= limit)
        if row["warm_to_ray"] is not None:
            got = row["warm_to_ray"]
            target(f"{case}, warm wall below Ray Data's", got, got < 1.0)
        got, least = row["pipeline_to_bare"], job.min_pipeline_ratio
        target(f"{case}, in-pipeline ≥ {least}× bare loop", got, got is not None and got >= least)
    return {"cases": cases, "targets": targets}


def _show(value: float | None, width: int = 7) -> str:
    return f"{value:{width}.2f}" if value is not None else f"{'-':>{width}}"


def _ray_imports() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description="Whole-process time of a local run")
    parser.add_argument("--job", choices=["digits", "resnet", "both"], default="both")
    parser.add_argument("-n", "--images", type=int, default=5000, help="digit PNGs")
    parser.add_argument("--photos", type=int, default=400, help="JPEGs for ResNet-18")
    parser.add_argument("--repeat", type=int, default=2, help="runs per case (first: cold)")
    parser.add_argument(
        "--batch-size", type=int, default=64, help="of the bare loop and Ray (not the flow)"
    )
    parser.add_argument("--out", type=Path, default=HERE / "out" / "startup.json")
    parser.add_argument("--child", nargs=5, metavar=("KIND", "FOLDER", "OUT", "BATCH", "PRED"))
    args = parser.parse_args()
    if args.child:
        kind, folder, out, batch, predictor = args.child
        child = {"bare": bare, "ray": ray_data}[kind]
        print(json.dumps(child(folder, out, int(batch), predictor)))
        return

    names = ["digits", "resnet"] if args.job == "both" else [args.job]
    counts = {"digits": args.images, "resnet": args.photos}
    print(f"{os.cpu_count()} cores (shared machine), Python {platform.python_version()}")
    results: dict[str, Any] = {"batch_size_bare_and_ray": args.batch_size, "jobs": {}}
    for name in names:
        results["jobs"][name] = run_job(name, counts[name], args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
