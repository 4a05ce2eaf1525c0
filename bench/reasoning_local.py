"""Benchmark: the local reasoner (pyoxigraph to a fixpoint) from 1k to 1M triples.

    python bench/reasoning_local.py                       # 1k, 10k, 100k triples
    python bench/reasoning_local.py --sizes 1000000       # the 1M-triple example (~minutes)
    python bench/reasoning_local.py --rules datalog       # only the .dlog rules

For each size it generates the example transactions (fixed seed), loads them into an
in-memory pyoxigraph store, materialises the suspicious-chain rules to a fixpoint and
runs the export and count queries, timing each phase and the process's memory growth.
Both forms of the rules run on the same data: the SPARQL Update rules (``*.ru``, every
rule every round: the "before") and the RDFox Datalog rules (``chains.dlog``, translated
and run semi-naively: the "after"); ``sparql_vs_datalog`` is their materialisation-time
ratio (in wall and in CPU time: on a shared machine the neighbours' load moves wall time).
The baseline is the plain-Python chain search of the tests (the same chains,
found by depth-first search). Chain counts from every form must agree, or it stops.

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

from infergraph.reasoning.datalog import materialise_datalog, parse_datalog  # noqa: E402
from infergraph.reasoning.examples import (  # noqa: E402
    DATALOG_RULES,
    HIGH_VALUE_THRESHOLD,
    MAX_CHAIN_LENGTH,
    QUERIES,
    RULES,
    generate,
)
from infergraph.reasoning.runners.local import MAX_ROUNDS, materialise  # noqa: E402


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


def run(size: int, forms: list[str]) -> dict[str, float]:
    data = generate(size, seed=42)
    text = "".join(data.ntriples()).encode()
    b0 = time.perf_counter()
    baseline = python_chains(data)
    b1 = time.perf_counter()
    row: dict[str, float] = {"triples": data.triple_count, "chains": baseline["all"]}
    for form in forms:
        rss = psutil.Process().memory_info().rss
        t0 = time.perf_counter()
        store = Store()
        store.bulk_load(text, RdfFormat.N_TRIPLES)
        t1 = time.perf_counter()
        c1 = time.process_time()
        if form == "sparql":
            rounds = materialise(store, [(p.name, p.read_text()) for p in RULES])
        else:
            programs = [parse_datalog(p.read_text(), p.name) for p in DATALOG_RULES]
            rounds = materialise_datalog(store, programs, MAX_ROUNDS)
        t2 = time.perf_counter()
        c2 = time.process_time()
        counts = {}
        exported = 0
        for query in QUERIES:
            result = store.query(query.read_text())
            if hasattr(result, "variables"):
                first = next(iter(result))
                counts = {v.value: int(first[v].value) for v in result.variables}
            else:
                exported += len(result.serialize(format=RdfFormat.N_TRIPLES).splitlines())
        t3 = time.perf_counter()
        grown = psutil.Process().memory_info().rss - rss
        assert counts["fullChainCount"] == baseline["full"], (form, counts, baseline)
        assert counts["highValueChainCount"] == baseline["high"], (form, counts, baseline)
        assert counts["partialChainCount"] == baseline["all"] - baseline["full"], (form, counts)
        row.update(
            {
                f"{form}_facts_after": len(store),
                f"{form}_rounds": rounds,
                f"{form}_exported_triples": exported,
                f"{form}_load_s": round(t1 - t0, 3),
                f"{form}_materialise_s": round(t2 - t1, 3),
                f"{form}_materialise_cpu_s": round(c2 - c1, 3),
                f"{form}_queries_s": round(t3 - t2, 3),
                f"{form}_total_s": round(t3 - t0, 3),
                f"{form}_memory_mb": round(grown / 2**20, 1),
            }
        )
        del store
    row["python_chain_search_s"] = round(b1 - b0, 3)
    if len(forms) == 2:
        # Wall time on a shared machine swings with the neighbours' load; CPU time less so.
        for kind in ("", "_cpu"):
            row[f"sparql_vs_datalog{kind}"] = round(
                row[f"sparql_materialise{kind}_s"] / max(row[f"datalog_materialise{kind}_s"], 1e-6),
                1,
            )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--rules", choices=["sparql", "datalog", "both"], default="both")
    parser.add_argument("--out", default=str(HERE / "out" / "reasoning_local.json"))
    args = parser.parse_args()
    forms = ["sparql", "datalog"] if args.rules == "both" else [args.rules]
    rows = [run(size, forms) for size in args.sizes]
    for row in rows:
        print(" | ".join(f"{k}={v}" for k, v in row.items()))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
