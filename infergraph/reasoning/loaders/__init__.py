"""Bulk loading reasoner output into a graph store: Neptune, or a local Oxigraph stand-in.

Both sit behind one start / status / cancel / verify interface (``base.GraphLoader``).
"""

from __future__ import annotations

from blocks.neptune import NeptuneCluster
from blocks.oxigraph import OxigraphStore
from infergraph.reasoning.loaders.base import (
    GraphLoader,
    LoadRefused,
    LoadRequest,
    LoadStatus,
    build_load_request,
)
from infergraph.reasoning.loaders.neptune import NeptuneLoader
from infergraph.reasoning.loaders.oxigraph import OxigraphLoader
from infergraph.reasoning.loaders.status import LoaderStatus

__all__ = [
    "GraphLoader",
    "LoadRefused",
    "LoadRequest",
    "LoadStatus",
    "LoaderStatus",
    "NeptuneLoader",
    "OxigraphLoader",
    "build_load_request",
    "open_loader",
]


def open_loader(store: NeptuneCluster | OxigraphStore) -> GraphLoader:
    if isinstance(store, NeptuneCluster):
        return NeptuneLoader(store)
    if isinstance(store, OxigraphStore):
        return OxigraphLoader(store)
    raise TypeError(f"not a graph store block: {type(store).__name__}")
