"""Benchmark: the inference flow against bare loops of the same model, and its peak memory.

    python bench/inference.py            # full run (~6-10 min on 2 cores)
    python bench/inference.py --quick    # smaller sizes, for a smoke test
    python bench/inference.py --only memory photos

Every measurement runs in a fresh subprocess (so peak RSS is that run's alone)
against one temporary Prefect server started here. The flow runs at its default
settings (``--flow-batch-size`` to choose one); the bare loops at ``--batch-size``. Cases:

- digits (decode-bound): the flow over N PNG files vs a bare sequential loop
  that reads, decodes, preprocesses and predicts the same files in batches;
- resnet18 (compute-bound): the flow over N JPEG photos vs a bare loop of the
  same model over the same images already decoded and preprocessed;
- memory: the flow's peak RSS at 1,000, 10,000 and 50,000 digit images, and whether
  it stays flat (largest within 10% of the smallest);
- photos: peak RSS and images/s of the flow and of the bare decode loop on 24-megapixel
  JPEGs (6000×4000) with ResNet-18.

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

from bench.harness import (  # noqa: E402  (needs REPO on the path)
    digit_samples,
    image_folder,
    make_photos,
    peak_rss_mb,
    run_child,
)

DIGITS = "infergraph.predictors.digits:DigitsClassifier"
RESNET = "resnet:ResNet18Predictor"
CASES = ("digits", "resnet", "memory", "photos")
FULL = {"digits": 5000, "resnet": 384, "rss": (1000, 10000, 50000), "photos": 6}
QUICK = {"digits": 1000, "resnet": 64, "rss": (300, 1000, 3000), "photos": 2}
FLAT = 1.10  # peak RSS counts as flat when the largest is within 10% of the smallest


# Child modes: each prints one JSON line with its own measurements.


def child_flow(folder: str, predictor: str, batch_size: int, out: str) -> dict[str, Any]:
    """The flow in this process; ``batch_size`` 0 leaves the batch size to the flow."""
    from flows.inference import inference

    chosen = {"batch_size": batch_size} if batch_size else {}
    started = time.perf_counter()
    summary = inference(source=folder, predictor=predictor, sinks=[out], **chosen)
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


def main() -> None:
    parser = argparse.ArgumentParser(description="Inference flow benchmark")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "inference.json")
    parser.add_argument("--batch-size", type=int, default=64, help="of the bare loops")
    parser.add_argument(
        "--flow-batch-size", type=int, default=0, help="of the flow (default: its own)"
    )
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

    sizes = QUICK if args.quick else FULL
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "batch_size": {"bare": args.batch_size, "flow": args.flow_batch_size or "default"},
    }
    with tempfile.TemporaryDirectory() as tmp, prefect_test_harness(server_startup_timeout=180):
        root = Path(tmp)
        env = {
            **os.environ,
            "PREFECT_API_URL": str(PREFECT_API_URL.value()),
            "PREFECT_LOGGING_LEVEL": "WARNING",
            "PYTHONPATH": os.pathsep.join([str(REPO), str(HERE)]),
        }
        digits_src = digit_samples()
        bare_batch = str(args.batch_size)

        def flow_case(folder: Path, predictor: str) -> dict[str, Any]:
            out = str(root / f"out-{folder.name}.jsonl")
            return run_child(
                __file__, ["flow", str(folder), predictor, str(args.flow_batch_size), out], env
            )

        def digits(count: int) -> Path:
            return image_folder(root / f"digits-{count}", digits_src, count)

        if "digits" in args.only:
            folder = digits(sizes["digits"])
            bare = run_child(__file__, ["bare-decode", str(folder), DIGITS, bare_batch], env)
            results["digits"] = compare(sizes["digits"], bare, flow_case(folder, DIGITS))

        if "resnet" in args.only:
            photos = make_photos(root / "photos-src", 48)
            folder = image_folder(root / f"photos-{sizes['resnet']}", photos, sizes["resnet"])
            bare = run_child(__file__, ["bare-compute", str(folder), RESNET, bare_batch], env)
            results["resnet18"] = compare(sizes["resnet"], bare, flow_case(folder, RESNET))

        if "memory" in args.only:
            runs = [{"n": n, **flow_case(digits(n), DIGITS)} for n in sizes["rss"]]
            peaks = [r["peak_rss_mb"] for r in runs]
            spread = max(peaks) / min(peaks)
            results["memory"] = {"runs": runs, "max_over_min": spread, "flat": spread <= FLAT}

        if "photos" in args.only:
            folder = root / "photos-24mp"
            make_photos(folder, sizes["photos"], 6000, 4000)
            bare = run_child(__file__, ["bare-decode", str(folder), RESNET, bare_batch], env)
            results["photos_24mp"] = compare(sizes["photos"], bare, flow_case(folder, RESNET))

    print_table(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"\nwritten to {args.out}")


def compare(n: int, bare: dict[str, Any], flow: dict[str, Any]) -> dict[str, Any]:
    """Flow/bare ratios: of the flow call's whole rate, and of its in-pipeline rate."""
    ratio = flow["images_per_second"] / bare["images_per_second"]
    pipeline = flow["pipeline_images_per_second"] / bare["images_per_second"]
    return {"n": n, "bare": bare, "flow": flow, "ratio": ratio, "pipeline_ratio": pipeline}


def print_table(results: dict[str, Any]) -> None:
    """Images/s (of the whole flow call; in-pipeline in its own column), ratios, peak RSS."""
    print(f"\n{'case':<22}{'images':>8}{'images/s':>11}{'ratio':>8}"
          f"{'in-pipeline':>13}{'ratio':>8}{'peak RSS MB':>13}")  # fmt: skip

    def line(name: str, row: dict[str, Any], ratio: str = "", pipeline_ratio: str = "") -> None:
        pipeline = row.get("pipeline_images_per_second")
        rate = f"{pipeline:.1f}" if pipeline is not None else ""
        print(f"{name:<22}{row['images']:>8}{row['images_per_second']:>11.1f}{ratio:>8}"
              f"{rate:>13}{pipeline_ratio:>8}{row['peak_rss_mb']:>13.1f}")  # fmt: skip

    for name, target in (("digits", 0.85), ("resnet18", 0.95), ("photos_24mp", None)):
        if name not in results:
            continue
        case = results[name]
        line(f"{name} bare", case["bare"])
        flow = case["flow"]
        line(f"{name} flow", flow, f"{case['ratio']:.2f}", f"{case['pipeline_ratio']:.2f}")
        if target is not None:
            verdict = "met" if case["pipeline_ratio"] >= target else "MISSED"
            print(f"{'':<22}target in-pipeline flow/bare ≥ {target:.2f}: {verdict}")
        else:
            rss = flow["peak_rss_mb"] / case["bare"]["peak_rss_mb"]
            print(f"{'':<22}flow peak RSS ×{rss:.2f} the bare loop's (one batch of all photos)")
    if "memory" in results:
        memory = results["memory"]
        for row in memory["runs"]:
            line(f"memory {row['n']}", row)
        verdict = "flat" if memory["flat"] else "NOT flat"
        print(f"{'':<22}peak RSS max/min ×{memory['max_over_min']:.3f}: {verdict} (±10%)")


if __name__ == "__main__":
    main()
