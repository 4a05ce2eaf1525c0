"""The example's chains found without SPARQL or Datalog: the tests' independent answer."""

from __future__ import annotations

from collections import defaultdict

from infergraph.reasoning.examples import HIGH_VALUE_THRESHOLD, MAX_CHAIN_LENGTH, Dataset

Path_ = tuple[str, ...]


def reference_chains(data: Dataset) -> dict[str, set[Path_]]:
    """Depth-first search of NOTES §3's definition, written without SPARQL."""
    by_originator = defaultdict(list)
    for t in data.transactions:
        by_originator[t.originator].append(t)
    chains: list[tuple] = []

    def walk(path: tuple) -> None:
        chains.append(path)
        if len(path) >= MAX_CHAIN_LENGTH:
            return
        last = path[-1]
        for t in by_originator[last.beneficiary]:
            if t.date > last.date:
                walk((*path, t))

    for t in data.transactions:
        if t.originator in data.suspicious:
            walk((t,))
    ids = lambda p: tuple(t.id for t in p)  # noqa: E731
    return {
        "all": {ids(p) for p in chains},
        "full": {ids(p) for p in chains if p[-1].beneficiary in data.suspicious},
        "high": {ids(p) for p in chains if min(t.amount for t in p) > HIGH_VALUE_THRESHOLD},
    }
