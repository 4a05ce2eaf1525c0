"""What every benchmark script needs around its measurements: child runs, images, the emulator."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

#: The flow's summary line: ``done: ... · 629.3 images/s over 7.95 s``.
SUMMARY_RATE = re.compile(r"([\d.]+) images/s over ([\d.]+) s")


def run_child(script: str, args: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run ``script --child args`` in a fresh interpreter; the JSON line it prints last.

    A fresh process per measurement, so no run inherits another's warm caches or
    peak memory.
    """
    done = subprocess.run(
        [sys.executable, script, "--child", *args], stdout=subprocess.PIPE, env=env, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"child {args} failed with code {done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def credentials(endpoint: str) -> Any:
    """An AwsCredentials block for the emulator at ``endpoint`` (moto takes any key)."""
    from prefect_aws import AwsCredentials

    return AwsCredentials(
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
        aws_client_parameters={"endpoint_url": endpoint},
    )


def image_keys(prefix: str, count: int) -> list[str]:
    """The object keys benchmarks upload their ``count`` images under."""
    return [f"{prefix}img_{i:06d}.png" for i in range(count)]


def offline_emulator_environment() -> None:
    """No telemetry (no network here) and moto's placeholder keys, unless already set."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(name, "testing")


def digit_samples() -> list[Path]:
    """The digit PNGs shipped with the digits model."""
    from infergraph.predictors.digits import SAMPLES

    return sorted(SAMPLES.glob("*.png"))


def image_folder(folder: Path, sources: list[Path], count: int, link: bool = True) -> Path:
    """``count`` distinct file names cycling over ``sources``: symlinks (no disk cost) or copies."""
    if not folder.exists():
        folder.mkdir(parents=True)
        for i in range(count):
            src, dest = sources[i % len(sources)], folder / f"img_{i:06d}{sources[0].suffix}"
            if link:
                dest.symlink_to(src)
            else:
                shutil.copyfile(src, dest)
    return folder


def make_photos(
    folder: Path, count: int, width: int = 320, height: int = 240, noise: float = 12.0
) -> list[Path]:
    """Photo-like JPEGs: smooth colour gradients plus sensor-like noise, so they compress as
    photos do (flat images would be unrealistically small, pure noise unrealistically large).

    Built in strips of rows, so a 24-megapixel photo costs tens of MB here, not hundreds.
    """
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    x = np.arange(width, dtype=np.float32)[None, :] * (320 / width)
    paths = []
    for i in range(count):
        slope_x, slope_y = rng.uniform(0.3, 0.8), rng.uniform(0.3, 1)
        pixels = np.empty((height, width, 3), np.uint8)
        for top in range(0, height, 512):
            rows = np.arange(top, min(top + 512, height), dtype=np.float32)[:, None]
            y = rows * (240 / height)
            base = np.stack(np.broadcast_arrays(x * slope_x, y * slope_y, (x + y) * 0.3), -1)
            base += rng.normal(0, noise, base.shape).astype(np.float32)
            pixels[top : top + len(rows)] = base.clip(0, 255)
        path = folder / f"photo_{i:03d}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM, which unlike ru_maxrss survives no exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError("no VmHWM in /proc/self/status")


def summary_rate(output: str) -> float | None:
    """The in-pipeline images/s of a flow run's summary line in ``output`` (None if absent)."""
    found = SUMMARY_RATE.findall(output)
    return float(found[-1][0]) if found else None


def count_rows(path: Path) -> int:
    """Data rows of a CSV file, or of every CSV file in a folder (Ray writes one per block)."""
    files = sorted(path.rglob("*.csv")) if path.is_dir() else [path] if path.exists() else []
    total = 0
    for file in files:
        with file.open(newline="") as handle:
            total += max(sum(1 for _ in csv.reader(handle)) - 1, 0)
    return total


def measured(images: int, started: float, cpu: float) -> dict[str, Any]:
    """Images done and the wall and CPU seconds since ``started`` / ``cpu`` (perf, process)."""
    wall = time.perf_counter() - started
    return {
        "images": images,
        "wall_seconds": wall,
        "images_per_second": images / wall,
        "cpu_seconds": time.process_time() - cpu,
    }


def raw_get(endpoint: str, bucket: str, names: list[str], threads: int) -> dict[str, Any]:
    """Every object fetched by ``threads`` threads, bodies discarded: the I/O ceiling."""
    from infergraph.aws.clients import aws_client

    s3 = aws_client("s3", credentials(endpoint))
    s3.get_object(Bucket=bucket, Key=names[0])["Body"].read()  # connection warm-up
    cpu, started = time.process_time(), time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        sizes = list(
            pool.map(lambda k: len(s3.get_object(Bucket=bucket, Key=k)["Body"].read()), names)
        )
    return measured(len(sizes), started, cpu)
