"""The shipped detector: held-out mAP, the box contract, and embeddings that sort items."""

from __future__ import annotations

import numpy as np
import pytest

from infergraph.detection.metrics import mean_average_precision
from infergraph.detection.predictor import Detector, crop
from infergraph.detection.synthetic import Scene, SceneObject, render
from infergraph.detection.train import held_out_map
from infergraph.predictors.base import RecordMeta
from infergraph.sessions.planning import kmeans


@pytest.fixture(scope="module")
def detector() -> Detector:
    loaded = Detector()
    loaded.load()
    return loaded


def test_held_out_map_recomputed_meets_the_target() -> None:
    assert held_out_map() >= 0.9


def test_map_of_perfect_and_empty_predictions() -> None:
    truth = [[{"class_id": 0, "x1": 0, "y1": 0, "x2": 10, "y2": 10}]]
    perfect = [[{**truth[0][0], "score": 0.9}]]
    assert mean_average_precision(perfect, truth) == 1.0
    assert mean_average_precision([[]], truth) == 0.0


def test_boxes_are_in_pixels_of_the_decoded_image(detector: Detector) -> None:
    scene = Scene(
        (
            SceneObject(0, "red-disc", 0.3, 0.5, 0.06, 0.08),
            SceneObject(1, "bin", 0.7, 0.4, 0.2, 0.3),
        ),
        (190, 170, 130),
        1,
    )
    image = np.asarray(render(scene, 1640, 1232, supersample=1))
    [result] = detector.run_batch([image], [RecordMeta(record_id="x", uri="x")])
    assert isinstance(result, dict) and result["box_count"] == 2
    boxes = sorted(result["boxes"], key=lambda b: b["class_id"])
    assert [b["label"] for b in boxes] == ["item", "container"]
    assert set(boxes[0]) == {"class_id", "label", "score", "x1", "y1", "x2", "y2"}
    # The item is centred at (0.3 W, 0.5 H) = (492, 616), about 98×99 px.
    item = boxes[0]
    assert abs((item["x1"] + item["x2"]) / 2 - 492) < 15
    assert abs((item["y1"] + item["y2"]) / 2 - 616) < 15
    assert abs((item["x2"] - item["x1"]) - 98) < 20


def test_crop_embeddings_separate_item_kinds(detector: Detector) -> None:
    kinds = ["red-disc", "blue-square", "green-triangle"]
    objects = tuple(
        SceneObject(0, kinds[n % 3], 0.1 + 0.12 * (n % 7), 0.2 + 0.3 * (n // 7), 0.05, 0.066)
        for n in range(12)
    )
    image = np.asarray(render(Scene(objects, (180, 160, 120), 2), 1640, 1232, supersample=1))
    crops = [
        crop(
            image,
            {
                "x1": (o.cx - o.w / 2) * 1640,
                "y1": (o.cy - o.h / 2) * 1232,
                "x2": (o.cx + o.w / 2) * 1640,
                "y2": (o.cy + o.h / 2) * 1232,
            },
        )
        for o in objects
    ]
    labels = kmeans(detector.embed_crops(crops), 3, seed=0).tolist()
    assert labels == [0, 1, 2] * 4
