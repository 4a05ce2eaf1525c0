"""Benchmark: whole-process wall time of a local run, against a bare script, side by side.

    python bench/startup.py              # 5,000 digit PNGs, each case twice
    python bench/startup.py -n 1000 --repeat 1

What a user waits for, from typing the command to the prompt coming back:

- bare: a plain batched script (same predictor, decode + predict + CSV, no Prefect);
- flow, no server: ``python flows/inference.py <folder>`` with nothing configured
  (Prefect's temporary server; its first run also migrates a new database: "cold");
- flow, kept server: the same with ``python -m infergraph.prefect_server start`` up;
- Ray Data ``map_batches`` on the same files and predictor, if ``ray`` imports.

Every run is a fresh process; the figures are ratios against the bare script of the same
run. Children get ``OMP_NUM_THREADS=1`` alike (a shared machine). Writes bench/out/startup.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PREDICTOR = "infergraph.predictors.digits:DigitsClassifier"


def make_images(folder: Path, count: int) -> Path:
    """``count`` digit PNG files (copies cycling over the shipped samples)."""
    sys.path.insert(0, str(REPO))
    from infergraph.predictors.digits import SAMPLES

    samples = sorted(SAMPLES.glob("*.png"))
    folder.mkdir(parents=True)
    for i in range(count):
        shutil.copyfile(samples[i % len(samples)], folder / f"img_{i:06d}.png")
    return folder


def timed(command: list[str], env: dict[str, str], cwd: Path) -> float:
    """Wall seconds of ``command`` from start to exit; fails loudly if it fails."""
    started = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{command[:3]} failed:\n{done.stderr[-3000:]}")
    return wall


# -- child scripts (run in fresh interpreters) ---------------------------------------------


def bare(folder: str, out: str, batch_size: int) -> None:
    """A plain script: decode, predict and write a CSV, batch by batch, in one thread."""
    import csv

    import torch

    from infergraph.inference.decode import decode_image
    from infergraph.predictors.base import RecordMeta
    from infergraph.predictors.loading import PredictorSpec, get_predictor

    predictor = get_predictor(PredictorSpec(path=PREDICTOR))
    paths = sorted(Path(folder).glob("*.png"))
    with open(out, "w", newline="") as handle:
        writer = None
        for start in range(0, len(paths), batch_size):
            chunk = paths[start : start + batch_size]
            metas = [RecordMeta(str(p), str(p)) for p in chunk]
            inputs = [
                predictor.preprocess_input(decode_image(p.read_bytes(), str(p)), m)
                for p, m in zip(chunk, metas, strict=True)
            ]
            with torch.inference_mode():
                outputs = predictor.split(
                    predictor.predict(predictor.collate(inputs), metas), len(chunk)
                )
            for path, output, meta in zip(chunk, outputs, metas, strict=True):
                row = {"uri": str(path), **predictor.postprocess_output(output, meta)}
                if writer is None:
                    writer = csv.DictWriter(handle, fieldnames=list(row), extrasaction="ignore")
                    writer.writeheader()
                writer.writerow(row)


def ray_data(folder: str, out: str, batch_size: int) -> None:
    """Ray Data's ``map_batches`` over the same files with the same predictor."""
    import ray
    import torch

    from infergraph.inference.decode import decode_image
    from infergraph.predictors.base import RecordMeta
    from infergraph.predictors.loading import PredictorSpec, get_predictor

    class Classify:
        def __init__(self) -> None:
            self.predictor = get_predictor(PredictorSpec(path=PREDICTOR))

        def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
            p = self.predictor
            metas = [RecordMeta(str(path), str(path)) for path in batch["path"]]
            inputs = [
                p.preprocess_input(decode_image(b, str(m.uri)), m)
                for b, m in zip(batch["bytes"], metas, strict=True)
            ]
            with torch.inference_mode():
                outputs = p.split(p.predict(p.collate(inputs), metas), len(metas))
            rows = [p.postprocess_output(o, m) for o, m in zip(outputs, metas, strict=True)]
            return {"uri": list(batch["path"]), "class_id": [r.get("class_id") for r in rows]}

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    data = ray.data.read_binary_files(folder, include_paths=True)
    data = data.map_batches(Classify, batch_size=batch_size, concurrency=1)
    data.write_csv(out)


# -- the comparison ---------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description="Whole-process time of a local run")
    parser.add_argument("-n", "--images", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=2, help="runs per case (first: cold)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=HERE / "out" / "startup.json")
    parser.add_argument("--child", nargs=4, metavar=("KIND", "FOLDER", "OUT", "BATCH"))
    args = parser.parse_args()
    if args.child:
        kind, folder, out, batch = args.child
        sys.path.insert(0, str(REPO))
        {"bare": bare, "ray": ray_data}[kind](folder, out, int(batch))
        return

    work = Path(tempfile.mkdtemp(prefix="startup-bench-"))
    folder = make_images(work / "digits", args.images)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_")}
    env |= {
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": "1",
        "PREFECT_HOME": str(work / "prefect"),
        "INFERGRAPH_HOME": str(work / "home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    me, flow = [sys.executable, __file__], [sys.executable, str(REPO / "flows" / "inference.py")]
    batch = str(args.batch_size)
    cases: dict[str, list[float]] = {}

    def measure(name: str, command: list[str]) -> None:
        for i in range(args.repeat):
            run_dir = work / f"{name}-{i}"
            run_dir.mkdir()
            out = str(run_dir / "out.csv")
            cmd = [c.replace("{out}", out) for c in command]
            wall = timed(cmd, env, run_dir)
            cases.setdefault(name, []).append(wall)
            print(f"  {name:<26} run {i + 1}: {wall:6.2f} s", flush=True)

    print(f"{args.images} digit PNGs, batch {batch}, {os.cpu_count()} cores (shared machine)")
    measure("bare script", [*me, "--child", "bare", str(folder), "{out}", batch])
    extra = ["--batch-size", batch, "--sink", "{out}"]
    measure("flow, no server", [*flow, str(folder), *extra])
    server = [sys.executable, "-m", "infergraph.prefect_server"]
    port = ["--port", str(_free_port())]
    started = time.perf_counter()
    subprocess.run([*server, "start", *port], env=env, check=True, capture_output=True)
    server_start = time.perf_counter() - started
    print(f"  (kept server started in {server_start:.1f} s)")
    try:
        measure("flow, kept server", [*flow, str(folder), *extra])
    finally:
        subprocess.run([*server, "stop", *port], env=env, check=True, capture_output=True)
    try:
        import ray  # noqa: F401
    except ImportError:
        print("ray not installed (pip install 'ray[data]')")
    else:
        measure("ray data map_batches", [*me, "--child", "ray", str(folder), "{out}", batch])

    base = min(cases["bare script"])
    results: dict[str, Any] = {
        "images": args.images,
        "batch_size": args.batch_size,
        "kept_server_start_seconds": round(server_start, 2),
        "cases": {},
    }
    print(f"\n{'case':<26} {'first s':>8} {'best s':>8} {'best × bare':>12}")
    for name, walls in cases.items():
        first, best = walls[0], min(walls)
        results["cases"][name] = {
            "walls": [round(w, 2) for w in walls],
            "first_seconds": round(first, 2),
            "best_seconds": round(best, 2),
            "ratio_to_bare": round(best / base, 2),
        }
        print(f"{name:<26} {first:8.2f} {best:8.2f} {best / base:12.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"\nwritten to {args.out}")
    shutil.rmtree(work, ignore_errors=True)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    main()
