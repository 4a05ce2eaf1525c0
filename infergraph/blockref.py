"""Accept a block either as an instance or by the name it was saved under."""

from __future__ import annotations

import difflib
from typing import TypeVar

from prefect.blocks.core import Block

B = TypeVar("B", bound=Block)

SETUP_LOCAL = "python -m infergraph.devstack up"
SETUP_FILE = "python -m infergraph.blockconfig apply FILE"


class BlockNotFound(ValueError):
    """No saved block of that type and name; ``fix`` suggests a close name or how to save one."""

    def __init__(self, message: str, fix: str) -> None:
        super().__init__(f"{message} ({fix})")
        self.message, self.fix = message, fix


def resolve_block(value: B | str, block_type: type[B]) -> B:
    """``value`` itself if it is a block, else ``block_type.load(value)`` with a clear error."""
    if isinstance(value, block_type):
        return value
    if isinstance(value, str):
        try:
            return block_type.load(value)
        except ValueError as exc:
            raise not_found(value, block_type) from exc
    raise TypeError(f"expected a {block_type.__name__} or its name, got {type(value).__name__}")


def not_found(name: str, block_type: type[Block]) -> BlockNotFound:
    """The error for a missing block: a close saved name, else how to save the blocks."""
    slug = block_type.get_block_type_slug()
    saved = saved_names(slug)
    close = difflib.get_close_matches(name, saved, n=1)
    if close:
        fix = f"did you mean {close[0]!r}? (saved {slug} blocks: {', '.join(saved)})"
    elif saved:
        fix = f"saved {slug} blocks: {', '.join(saved)}; {SETUP_LOCAL} or {SETUP_FILE} saves others"
    else:
        fix = f"no {slug} block is saved: {SETUP_LOCAL} (local AWS) or {SETUP_FILE}"
    return BlockNotFound(f"no {block_type.__name__} block named {name!r}", fix)


def saved_names(slug: str) -> list[str]:
    """Names of the saved blocks of one type (empty if the API cannot say)."""
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            documents = client.read_block_documents_by_type(slug)
    except Exception:
        return []
    return sorted(d.name for d in documents if d.name and not d.is_anonymous)
