"""The shipped detector exported to a file that returns boxes, run by ExportedModelPredictor."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from infergraph.detection.export import export
from infergraph.detection.predictor import Detector
from infergraph.inference.decode import decode_image
from infergraph.predictors.base import RecordError, RecordMeta
from infergraph.predictors.exported import ExportedModelPredictor
from infergraph.predictors.loading import PredictorSpec, get_predictor
from tests.support.servers import REPO

DETECTION = REPO / "infergraph" / "detection"
OPTIONS = {
    "output": "boxes",
    "input_size": [120, 160],
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
    "labels": str(DETECTION / "labels.txt"),
}


def samples() -> tuple[list, list[RecordMeta]]:
    paths = sorted((DETECTION / "samples").glob("*.jpg"))
    images = [decode_image(p.read_bytes(), p.name) for p in paths]
    return images, [RecordMeta(record_id=p.name, uri=str(p)) for p in paths]


def same_boxes(a: list[dict], b: list[dict]) -> None:
    key = lambda box: (box["class_id"], round(box["x1"]), round(box["y1"]))  # noqa: E731
    assert len(a) == len(b) > 0
    for x, y in zip(sorted(a, key=key), sorted(b, key=key), strict=True):
        assert (x["class_id"], x["label"]) == (y["class_id"], y["label"])
        assert x["score"] == pytest.approx(y["score"], abs=2e-3)
        for c in ("x1", "y1", "x2", "y2"):
            assert x[c] == pytest.approx(y[c], abs=0.5)


@pytest.mark.parametrize("program", [False, True], ids=["torchscript", "torch.export"])
def test_exported_detector_gives_the_shipped_detectors_boxes(program: bool, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    path = export(tmp_path / ("detector.pt2" if program else "detector.pt"), program=program)
    exported = get_predictor(
        PredictorSpec(
            path="infergraph.predictors.exported:ExportedModelPredictor",
            options={**OPTIONS, "model": str(path)},
        )
    )
    assert exported.output_fields == ("boxes", "box_count")
    reference = Detector()
    reference.load()
    images, metas = samples()
    for want, got in zip(
        reference.run_batch(images, metas), exported.run_batch(images, metas), strict=True
    ):
        assert isinstance(want, dict) and isinstance(got, dict)
        same_boxes(want["boxes"], got["boxes"])
        assert got["box_count"] == len(got["boxes"])


def test_a_classifier_file_run_as_boxes_fails_per_record_with_the_shape(tmp_path: Path) -> None:
    path = tmp_path / "linear.pt"
    pooled = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()
    torch.jit.save(torch.jit.script(pooled), path)
    predictor = ExportedModelPredictor(**{**OPTIONS, "model": str(path)})
    predictor.load()
    images, metas = samples()
    results = predictor.run_batch(images[:2], metas[:2])
    assert all(isinstance(r, RecordError) for r in results)
    assert "returns N×K×6 [x1, y1, x2, y2, score, class_id], got shape (1, 3)" in str(results[0])
    with pytest.raises(ValueError, match="output must be 'classes' or 'boxes'"):
        ExportedModelPredictor(model="m", labels="l", output="masks")  # type: ignore[arg-type]


def test_export_cli_writes_a_loadable_file(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "infergraph.detection.export", str(tmp_path / "d.pt")],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert '"output": "boxes"' in done.stdout and (tmp_path / "d.pt").stat().st_size < 1_000_000
    bad = subprocess.run(
        [sys.executable, "-m", "infergraph.detection.export", str(tmp_path / "no" / "d.pt")],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2 and "is not a folder" in bad.stderr and "Traceback" not in bad.stderr
