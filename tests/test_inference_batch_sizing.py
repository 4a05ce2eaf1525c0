"""Batch sizes follow the measured cost and memory of batches, not a number the user guessed."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from infergraph.inference.batch import BatchOutput
from infergraph.inference.batch_sizing import AUTO, AdaptiveBatchSize, batch_sizes
from infergraph.inference.fetch import FetchOptions
from infergraph.inference.pipeline import BatchPipeline
from infergraph.inference.records import ImageRecord
from infergraph.inference.sources.base import Source
from infergraph.predictors.loading import PredictorSpec
from tests.test_engine_units import FIELDS, LoggingSink, ThreadTask, write

MiB = 2**20


def test_first_batches_are_small_and_double_until_one_is_measured() -> None:
    size = AdaptiveBatchSize(first=8)
    assert [size(), size(), size()] == [8, 16, 32]


def test_cheap_images_get_large_batches_reached_in_steps_of_at_most_four() -> None:
    size = AdaptiveBatchSize(first=8, target_seconds=2.0, largest=4096)
    size()
    size.observe(images=8, seconds=0.008, input_bytes=8 * 256)  # 1 ms an image
    steps = [size() for _ in range(4)]
    assert steps == [32, 128, 512, 2000]  # 2 s / 1 ms, grown at most 4× a batch


def test_expensive_images_get_small_batches_at_once() -> None:
    size = AdaptiveBatchSize(first=8, target_seconds=2.0)
    for _ in range(3):
        size()
    size.observe(images=8, seconds=4.0, input_bytes=8 * 1024)  # half a second an image
    assert size() == 4


def test_the_memory_budget_caps_the_batches_in_flight() -> None:
    size = AdaptiveBatchSize(first=8, in_flight=4, memory_budget=64 * MiB, target_seconds=60)
    size()
    size.observe(images=8, seconds=0.008, input_bytes=8 * MiB)  # 1 MiB of input an image
    assert max(size() for _ in range(6)) == 16  # 64 MiB over 4 batches in flight


def test_a_slower_batch_counts_at_once_a_faster_one_only_halfway() -> None:
    size = AdaptiveBatchSize(first=100, target_seconds=1.0, largest=10_000)
    size()
    size.observe(100, 1.0, 0)  # 10 ms
    assert size() == 100
    size.observe(100, 0.2, 0)  # 2 ms: smoothed to 6 ms
    assert size() == 166
    size.observe(100, 5.0, 0)  # 50 ms: taken as is
    assert size() == 20


@pytest.mark.parametrize(("batch_size", "memory"), [(-1, 512), (AUTO, 0)])
def test_impossible_batch_settings_are_refused_naming_the_parameter(
    batch_size: int, memory: int
) -> None:
    with pytest.raises(ValueError, match=r"batch_size|batch_memory_mib"):
        batch_sizes(batch_size, 3, memory)


class Listing(Source):
    description = "listing"

    def __init__(self, count: int) -> None:
        self.count = count

    def records(self) -> Any:
        return (ImageRecord(uri=f"/img/{i}.png", record_id=str(i)) for i in range(self.count))


def test_the_pipeline_sizes_its_batches_from_what_the_first_ones_cost() -> None:
    """Every image is written once; the batches grow from 8 as their cost comes back."""
    seen: list[int] = []

    def infer(records: list[ImageRecord], index: int, predictor: Any, fetch: Any) -> BatchOutput:
        seen.append(len(records))
        rows = [{"record_id": r.record_id, "uri": r.uri, **dict.fromkeys(FIELDS)} for r in records]
        for row in rows:
            row.update(status="ok", error=None)
        # 1 ms of work and 1 KiB of model input per image, whatever the batch
        return BatchOutput(rows, [False] * len(rows), len(rows) * 0.001, 0.0, len(rows) * 1024)

    log: list[tuple[str, str]] = []
    with ThreadPoolExecutor(4) as pool:
        summary = BatchPipeline(
            source=Listing(3000),
            predictor=PredictorSpec(path="infergraph.predictors.digits:DigitsClassifier"),
            infer=ThreadTask(infer, pool),
            write=ThreadTask(write, pool),
            sinks=[LoggingSink(log)],
            fetch=FetchOptions(),
            batch_size=AdaptiveBatchSize(in_flight=1, target_seconds=1.0),
            max_in_flight=1,
        ).run()
    assert summary.written == 3000 and sum(seen) == 3000
    assert seen[:3] == [8, 32, 128]  # measured after the first: ×4 steps towards 1000
    assert max(seen) == 1000


def test_a_listing_written_to_chunk_named_objects_keeps_fixed_batches(tmp_path: Any) -> None:
    """A rerun must cut the same batches to overwrite its S3 CSV objects; queues need not."""
    from infergraph.inference.batch_sizing import STABLE_SIZE, stable_batches
    from infergraph.inference.sinks.base import CsvFileSink
    from infergraph.inference.sinks.s3_csv import S3CsvSink
    from infergraph.inference.sources.sqs import SqsSource

    objects, local = S3CsvSink("bucket", "out/"), CsvFileSink(str(tmp_path / "out.csv"))
    assert stable_batches(Listing(1), [local, objects])
    assert not stable_batches(Listing(1), [local])
    assert not stable_batches(SqsSource.__new__(SqsSource), [objects])  # chunked per message
    assert batch_sizes(AUTO, 3, 512, stable=True) == STABLE_SIZE
    assert batch_sizes(32, 3, 512, stable=True) == 32  # a size given is a size kept


def test_a_large_batch_is_predicted_in_forward_passes_of_bounded_size() -> None:
    """Activations grow with a forward pass: a batch of 7 at most 3 a pass, rows in order."""
    import numpy as np

    from infergraph.inference.batch_sizing import FORWARD_BATCH, forward_batch
    from infergraph.predictors.base import RecordMeta
    from infergraph.predictors.digits import DigitsClassifier
    from infergraph.predictors.loading import get_predictor

    passes: list[int] = []

    class Watched(DigitsClassifier):
        def predict(self, batch: Any, metas: Any) -> Any:
            passes.append(len(metas))
            return super().predict(batch, metas)

    predictor = Watched()
    predictor.load()
    reference = get_predictor(PredictorSpec(path="infergraph.predictors.digits:DigitsClassifier"))
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 255, (40, 40, 3), dtype=np.uint8) for _ in range(7)]
    metas = [RecordMeta(str(i), f"/{i}.png") for i in range(7)]
    inputs = [predictor.prepare(image, meta) for image, meta in zip(images, metas, strict=True)]
    split = predictor.run_prepared(inputs, metas, forward_batch=3)
    assert passes == [3, 3, 1]
    whole = reference.run_prepared(inputs, metas)  # same rows, same order (floats aside)
    assert [r["class_id"] for r in split] == [r["class_id"] for r in whole]  # type: ignore[index]
    assert [r["score"] for r in split] == pytest.approx([r["score"] for r in whole], abs=1e-5)  # type: ignore[index]
    assert forward_batch(AdaptiveBatchSize()) == FORWARD_BATCH and forward_batch(256) == 0
