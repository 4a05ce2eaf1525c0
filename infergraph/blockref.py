"""Accept a block either as an instance or by the name it was saved under."""

from __future__ import annotations

from typing import TypeVar

from prefect.blocks.core import Block

B = TypeVar("B", bound=Block)


def resolve_block(value: B | str, block_type: type[B]) -> B:
    """``value`` itself if it is a block, else ``block_type.load(value)`` with a clear error."""
    if isinstance(value, block_type):
        return value
    if isinstance(value, str):
        try:
            return block_type.load(value)
        except ValueError as exc:
            slug = block_type.get_block_type_slug()
            raise ValueError(
                f"no {block_type.__name__} block named {value!r} "
                f"(create it in the UI or with the blocks command; slug {slug!r}): {exc}"
            ) from exc
    raise TypeError(f"expected a {block_type.__name__} or its name, got {type(value).__name__}")
