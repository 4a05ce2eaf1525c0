"""The predictor contract: resolution errors, per-record isolation, adapters, exported models."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from infergraph.inference.decode import decode_image
from infergraph.predictors.base import RecordError, RecordMeta
from infergraph.predictors.digits import SAMPLES, DigitsClassifier
from infergraph.predictors.digits.model import DigitsNet
from infergraph.predictors.loading import (
    PredictorSpec,
    PredictorSpecError,
    build_predictor,
    get_predictor,
    resolve_predictor_class,
)
from tests.support import predictors as support


def sample_images(count: int = 40) -> tuple[list[np.ndarray], list[RecordMeta], list[str]]:
    with open(SAMPLES / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))[:count]
    images = [decode_image((SAMPLES / r["file"]).read_bytes(), r["file"]) for r in rows]
    metas = [RecordMeta(r["file"], str(SAMPLES / r["file"])) for r in rows]
    return images, metas, [r["label"] for r in rows]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("DigitsClassifier", "not of the form 'package.module:Class'"),
        ("predictors.nowhere:Thing", "cannot import module 'predictors.nowhere'"),
        ("infergraph.predictors.digits:Missing", "has no attribute 'Missing'"),
        (
            "tests.support.predictors:NotAPredictor",
            "is not a subclass of infergraph.predictors.base.Predictor",
        ),
        ("tests.support.predictors:LOADS", "is not a subclass"),
        ("tests.support.predictors:Incomplete", "does not implement postprocess_output, predict"),
    ],
)
def test_bad_predictor_paths_are_named(path: str, message: str) -> None:
    with pytest.raises(PredictorSpecError) as caught:
        resolve_predictor_class(path)
    assert message in str(caught.value) and path in str(caught.value)


def test_both_path_styles_resolve() -> None:
    assert (
        resolve_predictor_class("infergraph.predictors.digits:DigitsClassifier") is DigitsClassifier
    )
    assert (
        resolve_predictor_class("infergraph.predictors.digits.DigitsClassifier") is DigitsClassifier
    )


def test_bad_options_are_reported_with_the_predictor() -> None:
    with pytest.raises(PredictorSpecError, match=r"DigitsClassifier.*bad options.*colour"):
        build_predictor(
            PredictorSpec(
                path="infergraph.predictors.digits:DigitsClassifier", options={"colour": 1}
            )
        )
    with pytest.raises(PredictorSpecError, match="top_k must be at least 1"):
        build_predictor(
            PredictorSpec(
                path="infergraph.predictors.digits:DigitsClassifier", options={"top_k": 0}
            )
        )


def test_digits_results_have_the_contract_fields() -> None:
    predictor = get_predictor(PredictorSpec(path="infergraph.predictors.digits:DigitsClassifier"))
    images, metas, labels = sample_images()
    results = predictor.run_batch(images, metas)
    assert all(isinstance(r, dict) for r in results)
    for result in results:
        assert isinstance(result, dict)
        json.dumps(result)
        assert 0.0 <= result["score"] <= 1.0
        assert result["category_name"] == str(result["class_id"])
        scores = [t["score"] for t in result["top_k"]]
        assert len(scores) == 3 and scores == sorted(scores, reverse=True)
        assert result["top_k"][0]["class_id"] == result["class_id"]
    correct = sum(r["category_name"] == label for r, label in zip(results, labels, strict=True))  # type: ignore[index]
    assert correct / len(labels) >= 0.95


def test_predictor_is_loaded_once_per_process_and_predicts_in_inference_mode() -> None:
    spec = PredictorSpec(path="tests.support.predictors:CountingDigits", options={"top_k": 2})
    before = sum(support.LOADS.values())
    first = get_predictor(spec)
    assert get_predictor(spec) is first
    assert get_predictor(PredictorSpec(path=spec.path, options={"top_k": 2})) is first
    assert sum(support.LOADS.values()) == before + 1
    images, metas, _ = sample_images(4)
    assert all(isinstance(r, dict) for r in first.run_batch(images, metas))


def test_record_at_a_time_adapter_matches_batch_predictions() -> None:
    batch = get_predictor(PredictorSpec(path="infergraph.predictors.digits:DigitsClassifier"))
    single = get_predictor(PredictorSpec(path="tests.support.predictors:OneAtATimeDigits"))
    images, metas, _ = sample_images(24)
    expected = batch.run_batch(images, metas)
    got = single.run_batch(images, metas)
    for a, b in zip(expected, got, strict=True):
        assert isinstance(a, dict) and isinstance(b, dict)
        assert a["class_id"] == b["class_id"]
        assert a["score"] == pytest.approx(b["score"], abs=1e-5)


def test_failures_stay_with_their_record() -> None:
    predictor = support.Fussy()
    values = [0, 1, 2, 3, 4, 5, 2, 6]
    images = [np.full((2, 2, 3), v, dtype=np.uint8) for v in values]
    metas = [RecordMeta(f"r{i}", f"img{i}.png") for i in range(len(values))]
    results = predictor.run_batch(images, metas)
    for value, result in zip(values, results, strict=True):
        if value == support.Fussy.PREPROCESS:
            assert isinstance(result, RecordError) and "preprocess_input failed" in str(result)
            assert "cannot preprocess this one" in str(result)
        elif value == support.Fussy.PREDICT:
            assert isinstance(result, RecordError) and "predict failed" in str(result)
            assert "model rejects the batch" in str(result)
        elif value == support.Fussy.POSTPROCESS:
            assert isinstance(result, RecordError) and "postprocess_output failed: KeyError" in str(
                result
            )
        else:
            assert result == {"value": value * 10.0}


class Normalise(nn.Module):
    """The digits model's polarity and contrast steps, in torch, so they can be exported."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        border = torch.cat([x[:, :, 0, :], x[:, :, -1, :], x[:, :, :, 0], x[:, :, :, -1]], dim=-1)
        invert = border.mean(dim=(1, 2)) > 0.5
        x = torch.where(invert[:, None, None, None], 1.0 - x, x)
        low = x.amin(dim=(1, 2, 3), keepdim=True)
        span = x.amax(dim=(1, 2, 3), keepdim=True) - low
        return torch.where(span > 1e-6, (x - low) / span.clamp_min(1e-6), torch.zeros_like(x))


def exportable_digits() -> nn.Module:
    net = DigitsNet()
    net.load_state_dict(torch.load(SAMPLES.parent / "weights.pt", weights_only=True))
    return nn.Sequential(Normalise(), net).eval()


def export(kind: str, folder: Path) -> Path:
    model = exportable_digits()
    example = torch.rand(4, 1, 32, 32)
    if kind == "torchscript":
        path = folder / "digits.pt"
        torch.jit.save(torch.jit.trace(model, example), path)
    else:
        path = folder / f"digits-{kind}.pt2"
        shapes = {"input": {0: torch.export.Dim.DYNAMIC}} if kind == "dynamic" else None
        torch.export.save(torch.export.export(model, (example,), dynamic_shapes=shapes), path)
    return path


@pytest.mark.parametrize("kind", ["torchscript", "dynamic", "static"])
def test_exported_models_match_the_shipped_predictor(kind: str, tmp_path: Path) -> None:
    path = export(kind, tmp_path)
    options = {"model": str(path), "labels": str(SAMPLES.parent / "labels.txt")}
    options |= {"input_size": 32, "channels": 1, "top_k": 3}
    exported = get_predictor(
        PredictorSpec(path="infergraph.predictors.exported:ExportedModelPredictor", options=options)
    )
    assert exported._static_batch == (4 if kind == "static" else None)
    reference = get_predictor(PredictorSpec(path="infergraph.predictors.digits:DigitsClassifier"))
    images, metas, _ = sample_images(13)  # not a multiple of the static batch of 4
    for a, b in zip(
        reference.run_batch(images, metas), exported.run_batch(images, metas), strict=True
    ):
        assert isinstance(a, dict) and isinstance(b, dict)
        assert (a["class_id"], a["category_name"]) == (b["class_id"], b["category_name"])
        assert a["score"] == pytest.approx(b["score"], abs=1e-4)


def test_exported_model_from_s3(aws, prefect_server, tmp_path: Path) -> None:
    from infergraph.aws.clients import aws_client

    path = export("torchscript", tmp_path)
    s3 = aws_client("s3", aws)
    s3.create_bucket(Bucket="models")
    s3.upload_file(str(path), "models", "digits/model.pt")
    s3.put_object(
        Bucket="models",
        Key="digits/labels.txt",
        Body=b"".join(f"digit-{d}\n".encode() for d in range(10)),
    )
    aws.save("test-models-s3", overwrite=True)
    options = {
        "model": "s3://models/digits/model.pt",
        "labels": "s3://models/digits/labels.txt",
        "input_size": [32, 32],
        "channels": 1,
        "aws_credentials": "test-models-s3",
    }
    predictor = get_predictor(
        PredictorSpec(path="infergraph.predictors.exported:ExportedModelPredictor", options=options)
    )
    images, metas, labels = sample_images(10)
    results = predictor.run_batch(images, metas)
    assert [r["category_name"] for r in results] == [f"digit-{label}" for label in labels]  # type: ignore[index]


def test_exported_model_errors_are_clear(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"not a model")
    (tmp_path / "labels.txt").write_text("a\nb\n")
    bad = exported_predictor(str(tmp_path / "weights.bin"), str(tmp_path / "labels.txt"))
    with pytest.raises(ValueError, match=r"weights\.bin: not a TorchScript or torch\.export file"):
        bad.load()
    with pytest.raises(ValueError, match="mean and std need 3 values"):
        exported_predictor("m", "l", mean=[0.5])
    with pytest.raises(FileNotFoundError):
        exported_predictor(str(tmp_path / "missing.pt"), str(tmp_path / "labels.txt")).load()


def exported_predictor(model: str, labels: str, **options):  # type: ignore[no-untyped-def]
    from infergraph.predictors.exported import ExportedModelPredictor

    return ExportedModelPredictor(model=model, labels=labels, **options)


def test_preprocessing_sees_grey_and_rgb_samples_alike() -> None:
    """The shipped samples mix grey and RGB files; both decode to RGB and classify."""
    modes = {Image.open(p).mode for p in SAMPLES.glob("*.png")}
    assert {"L", "RGB"} <= modes
    sizes = {Image.open(p).size for p in SAMPLES.glob("*.png")}
    assert min(w for w, _ in sizes) >= 64 and len(sizes) > 1
    assert len(list(SAMPLES.glob("*.png"))) >= 300
    with open(SAMPLES / "manifest.csv", newline="") as handle:
        assert {r["file"] for r in csv.DictReader(handle)} == {
            p.name for p in SAMPLES.glob("*.png")
        }


def test_grey_image_in_bands_equals_pillows_whole_conversion(monkeypatch) -> None:
    from infergraph.predictors import imaging

    monkeypatch.setattr(imaging, "BAND_PIXELS", 64)  # 2 rows of 29 per band
    rgb = np.random.default_rng(5).integers(0, 256, (41, 29, 3), dtype=np.uint8)
    expected = np.asarray(Image.fromarray(rgb).convert("L"))
    np.testing.assert_array_equal(np.asarray(imaging.grey_image(rgb)), expected)
