"""The bare model loop every benchmark compares against: no Prefect, no threads, no I/O overlap.

One place for it, so that each benchmark's baseline means the same thing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

Item = TypeVar("Item")


def predict_rows(predictor: Any, inputs: list[Any], metas: list[Any]) -> list[dict[str, Any]]:
    """One batch of prepared inputs through collate, predict, split and postprocess."""
    import torch

    with torch.inference_mode():
        outputs = predictor.split(predictor.predict(predictor.collate(inputs), metas), len(inputs))
    return [predictor.postprocess_output(o, m) for o, m in zip(outputs, metas, strict=True)]


def run_batches(
    predictor: Any,
    items: Sequence[Item],
    batch_size: int,
    prepare: Callable[[Item, Any], Any],
    on_rows: Callable[[Sequence[Item], list[dict[str, Any]]], None] | None = None,
) -> int:
    """Prepare, predict and postprocess ``items`` batch by batch in this thread; the count done.

    ``prepare(item, meta)`` turns an item (bytes, a path, an already-prepared
    tensor) into the predictor's input, so a benchmark chooses what the
    baseline includes; ``on_rows(chunk, rows)``, if given, writes the results.
    """
    from infergraph.predictors.base import RecordMeta

    done = 0
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        metas = [RecordMeta(str(start + i), "") for i in range(len(chunk))]
        inputs = [prepare(item, meta) for item, meta in zip(chunk, metas, strict=True)]
        rows = predict_rows(predictor, inputs, metas)
        if on_rows is not None:
            on_rows(chunk, rows)
        done += len(rows)
    return done
