"""Benchmark: the local reasoner (pyoxigraph to a fixpoint) from 1k to 1M triples.

    python bench/reasoning_local.py                       # 1k, 10k, 100k triples
    python bench/reasoning_local.py --sizes 1000000       # the 1M-triple example (~minutes)

For each size it generates the example transactions (fixed seed), loads them into an
in-memory pyoxigraph store, materialises the suspicious-chain rules to a fixpoint and
runs the export and count queries, timing each phase and the process's memory growth.
The baseline in the same run is the plain-Python chain search of the tests (the same
chains, found by depth-first search): the ratio says what the generality of SPARQL
rules costs over hand-written code. Chain counts from both must agree, or it stops.

Prints a table and writes JSON (default ``bench/out/reasoning_local.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from pyoxigraph import RdfFormat, Store  # noqa: E402

from infergraph.reasoning.examples import (  # noqa: E402
    HIGH_VALUE_THRESHOLD,
    MAX_CHAIN_LENGTH,
    QUERIES,
    RULES,
    generate,
)
from infergraph.reasoning.runners.local import materialise  # noqa: E402


def python_chains(data) -> dict[str, int]:
    by_originator = defaultdict(list)
    for t in data.transactions:
        by_originator[t.originator].append(t)
    counts = {"all": 0, "full": 0, "high": 0}
    stack = [
        (t.beneficiary, t.date, t.amount, 1)
        for t in data.transactions
        if t.originator in data.suspicious
    ]
    while stack:
        beneficiary, date, smallest, length = stack.pop()
        counts["all"] += 1
        counts["full"] += beneficiary in data.suspicious
        counts["high"] += smallest > HIGH_VALUE_THRESHOLD
        if length < MAX_CHAIN_LENGTH:
            for t in by_originator[beneficiary]:
                if t.date > date:
                    stack.append((t.beneficiary, t.date, min(smallest, t.amount), length + 1))
    return counts


def run(size: int) -> dict[str, float]:
    data = generate(size, seed=42)
    text = "".join(data.ntriples())
    rss = psutil.Process().memory_info().rss
    t0 = time.perf_counter()
    store = Store()
    store.bulk_load(text.encode(), RdfFormat.N_TRIPLES)
    t1 = time.perf_counter()
    rounds = materialise(store, [(p.name, p.read_text()) for p in RULES])
    t2 = time.perf_counter()
    counts = {}
    exported = 0
    for query in QUERIES:
        result = store.query(query.read_text())
        if hasattr(result, "variables"):
            row = next(iter(result))
            counts = {v.value: int(row[v].value) for v in result.variables}
        else:
            exported += len(result.serialize(format=RdfFormat.N_TRIPLES).splitlines())
    t3 = time.perf_counter()
    grown = psutil.Process().memory_info().rss - rss
    b0 = time.perf_counter()
    baseline = python_chains(data)
    b1 = time.perf_counter()
    assert counts["fullChainCount"] == baseline["full"], (counts, baseline)
    assert counts["highValueChainCount"] == baseline["high"], (counts, baseline)
    assert counts["partialChainCount"] == baseline["all"] - baseline["full"], (counts, baseline)
    return {
        "triples": data.triple_count,
        "facts_after": len(store),
        "rounds": rounds,
        "chains": baseline["all"],
        "exported_triples": exported,
        "load_s": round(t1 - t0, 3),
        "materialise_s": round(t2 - t1, 3),
        "queries_s": round(t3 - t2, 3),
        "total_s": round(t3 - t0, 3),
        "triples_per_s": round(data.triple_count / (t3 - t0)),
        "memory_mb": round(grown / 2**20, 1),
        "python_chain_search_s": round(b1 - b0, 3),
        "rules_vs_python": round((t2 - t1) / max(b1 - b0, 1e-6), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--out", default=str(HERE / "out" / "reasoning_local.json"))
    args = parser.parse_args()
    rows = [run(size) for size in args.sizes]
    keys = list(rows[0])
    print(" | ".join(keys))
    for row in rows:
        print(" | ".join(str(row[k]) for k in keys))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
