"""Benchmark: the inference flow against bare loops of the same model, and its peak memory.

    python bench/inference.py            # full run (~10 min on 2 cores)
    python bench/inference.py --quick    # smaller sizes, for a smoke test

Every measurement runs in a fresh subprocess (so peak RSS is that run's alone)
against one temporary Prefect server started here. Cases:

- digits (decode-bound): the flow over N PNG files vs a bare sequential loop
  that reads, decodes, preprocesses and predicts the same files in batches;
- resnet18 (compute-bound): the flow over N JPEG photos vs a bare loop of the
  same model over the same images already decoded and preprocessed;
- memory: the flow's peak RSS at 1,000 and at 20,000 images.

Prints a table and writes JSON (images/s, flow/bare ratio, peak RSS).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO), str(HERE)]

from bench.harness import run_child  # noqa: E402  (needs REPO on the path)

DIGITS = "infergraph.predictors.digits:DigitsClassifier"
RESNET = "resnet:ResNet18Predictor"


def make_folder(root: Path, name: str, sources: list[Path], count: int) -> Path:
    """``count`` distinct file names cycling over ``sources`` (symlinks: no disk cost)."""
    folder = root / f"{name}-{count}"
    if not folder.exists():
        folder.mkdir(parents=True)
        for i in range(count):
            src = sources[i % len(sources)]
            (folder / f"img_{i:06d}{src.suffix}").symlink_to(src)
    return folder


def make_photos(root: Path, count: int = 48) -> list[Path]:
    """Photo-like JPEGs (smooth gradients plus noise, 320×240) for the compute-bound case."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    folder = root / "photos-src"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    y, x = np.mgrid[0:240, 0:320]
    for i in range(count):
        base = np.stack([x * rng.uniform(0.3, 0.8), y * rng.uniform(0.3, 1), (x + y) * 0.3], -1)
        pixels = (base + rng.normal(0, 12, base.shape)).clip(0, 255).astype(np.uint8)
        path = folder / f"photo_{i:03d}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


# Child modes: each prints one JSON line with its own measurements.


def child_flow(folder: str, predictor: str, batch_size: int, out: str) -> dict[str, Any]:
    from flows.inference import inference

    started = time.perf_counter()
    summary = inference(
        source=folder, predictor=predictor, sinks=[out], batch_size=batch_size, max_in_flight=3
    )
    wall = time.perf_counter() - started
    return {
        "images": summary["images"],
        "errors": summary["errors"],
        "wall_seconds": wall,
        "images_per_second": summary["images"] / wall,
        "pipeline_images_per_second": summary["images_per_second"],
    }


def child_bare_decode(folder: str, predictor_path: str, batch_size: int) -> dict[str, Any]:
    """Read, decode, preprocess and predict in one thread, batch by batch: no Prefect."""
    from bench.bare import run_batches
    from infergraph.inference.decode import decode_image
    from infergraph.predictors.loading import PredictorSpec, get_predictor

    predictor = get_predictor(PredictorSpec(path=predictor_path))
    paths = sorted(Path(folder).iterdir())
    started = time.perf_counter()
    done = run_batches(
        predictor,
        paths,
        batch_size,
        lambda p, meta: predictor.preprocess_input(decode_image(p.read_bytes(), str(p)), meta),
    )
    wall = time.perf_counter() - started
    return {"images": done, "wall_seconds": wall, "images_per_second": done / wall}


def child_bare_compute(folder: str, predictor_path: str, batch_size: int) -> dict[str, Any]:
    """The model alone over already-decoded, already-preprocessed images."""
    from bench.bare import run_batches
    from infergraph.inference.decode import decode_image
    from infergraph.predictors.base import RecordMeta
    from infergraph.predictors.loading import PredictorSpec, get_predictor

    predictor = get_predictor(PredictorSpec(path=predictor_path))
    paths = sorted(Path(folder).iterdir())
    distinct = {p.resolve(): None for p in paths}
    for p in distinct:
        distinct[p] = predictor.preprocess_input(
            decode_image(p.read_bytes(), str(p)), RecordMeta("", "")
        )
    inputs = [distinct[p.resolve()] for p in paths]
    started = time.perf_counter()
    done = run_batches(predictor, inputs, batch_size, lambda prepared, _meta: prepared)
    wall = time.perf_counter() - started
    return {"images": done, "wall_seconds": wall, "images_per_second": done / wall}


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM, which unlike ru_maxrss survives no exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError("no VmHWM in /proc/self/status")


def main() -> None:
    parser = argparse.ArgumentParser(description="Inference flow benchmark")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "inference.json")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--child", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    if args.child:
        mode, folder, predictor, batch, *rest = args.child
        if mode == "flow":
            result = child_flow(folder, predictor, int(batch), rest[0])
        elif mode == "bare-decode":
            result = child_bare_decode(folder, predictor, int(batch))
        else:
            result = child_bare_compute(folder, predictor, int(batch))
        result["peak_rss_mb"] = peak_rss_mb()
        print(json.dumps(result))
        return

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    from infergraph.predictors.digits import SAMPLES

    sizes = {"digits": 1000, "resnet": 64, "rss": (300, 2000)} if args.quick else {
        "digits": 5000, "resnet": 384, "rss": (1000, 20000)
    }  # fmt: skip
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}
    }
    with tempfile.TemporaryDirectory() as tmp, prefect_test_harness(server_startup_timeout=180):
        root = Path(tmp)
        env = {
            **os.environ,
            "PREFECT_API_URL": str(PREFECT_API_URL.value()),
            "PREFECT_LOGGING_LEVEL": "WARNING",
            "PYTHONPATH": os.pathsep.join([str(REPO), str(HERE)]),
        }
        digits_src = sorted(SAMPLES.glob("*.png"))
        photos = make_photos(root)
        batch = str(args.batch_size)

        def flow_case(folder: Path, predictor: str) -> dict[str, Any]:
            return run_child(
                __file__, ["flow", str(folder), predictor, batch, str(root / "out.jsonl")], env
            )

        digits = make_folder(root, "digits", digits_src, sizes["digits"])
        bare = run_child(__file__, ["bare-decode", str(digits), DIGITS, batch], env)
        flow = flow_case(digits, DIGITS)
        results["digits"] = compare(sizes["digits"], bare, flow)

        resnet = make_folder(root, "photos", photos, sizes["resnet"])
        bare = run_child(__file__, ["bare-compute", str(resnet), RESNET, batch], env)
        flow = flow_case(resnet, RESNET)
        results["resnet18"] = compare(sizes["resnet"], bare, flow)

        small, large = sizes["rss"]
        rss_small = flow_case(make_folder(root, "digits", digits_src, small), DIGITS)
        rss_large = flow_case(make_folder(root, "digits", digits_src, large), DIGITS)
        results["memory"] = {
            "small": {"n": small, **rss_small},
            "large": {"n": large, **rss_large},
            "rss_growth_mb": rss_large["peak_rss_mb"] - rss_small["peak_rss_mb"],
            "rss_ratio": rss_large["peak_rss_mb"] / rss_small["peak_rss_mb"],
        }

    print_table(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"\nwritten to {args.out}")


def compare(n: int, bare: dict[str, Any], flow: dict[str, Any]) -> dict[str, Any]:
    ratio = flow["images_per_second"] / bare["images_per_second"]
    return {"n": n, "bare": bare, "flow": flow, "ratio": ratio}


def print_table(results: dict[str, Any]) -> None:
    print(f"\n{'case':<22}{'images':>8}{'images/s':>11}{'ratio':>8}{'peak RSS MB':>13}")
    for name, target in (("digits", 0.70), ("resnet18", 0.90)):
        case = results[name]
        for kind in ("bare", "flow"):
            row = case[kind]
            ratio = f"{case['ratio']:.2f}" if kind == "flow" else ""
            print(f"{name + ' ' + kind:<22}{row['images']:>8}{row['images_per_second']:>11.1f}"
                  f"{ratio:>8}{row['peak_rss_mb']:>13.1f}")  # fmt: skip
        verdict = "met" if case["ratio"] >= target else "MISSED"
        print(f"{'':<22}target flow/bare ≥ {target:.2f}: {verdict}")
    memory = results["memory"]
    for key in ("small", "large"):
        row = memory[key]
        print(f"{'memory ' + str(row['n']):<22}{row['images']:>8}{row['images_per_second']:>11.1f}"
              f"{'':>8}{row['peak_rss_mb']:>13.1f}")  # fmt: skip
    print(f"{'':<22}peak RSS growth {memory['rss_growth_mb']:+.1f} MB (×{memory['rss_ratio']:.3f})")


if __name__ == "__main__":
    main()
