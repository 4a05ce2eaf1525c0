"""The bare model loop every benchmark compares against: no Prefect, no threads, no I/O overlap.

One place for it, so that each benchmark's baseline means the same thing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

Item = TypeVar("Item")


def run_batches(
    predictor: Any,
    items: Sequence[Item],
    batch_size: int,
    prepare: Callable[[Item, Any], Any],
) -> int:
    """Prepare, predict and postprocess ``items`` batch by batch in this thread; the count done.

    ``prepare(item, meta)`` turns an item (bytes, a path, an already-prepared
    tensor) into the predictor's input, so a benchmark chooses what the
    baseline includes.
    """
    import torch

    from infergraph.predictors.base import RecordMeta

    done = 0
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        metas = [RecordMeta(str(start + i), "") for i in range(len(chunk))]
        inputs = [prepare(item, meta) for item, meta in zip(chunk, metas, strict=True)]
        with torch.inference_mode():
            outputs = predictor.split(
                predictor.predict(predictor.collate(inputs), metas), len(chunk)
            )
        done += len(
            [predictor.postprocess_output(o, m) for o, m in zip(outputs, metas, strict=True)]
        )
    return done
