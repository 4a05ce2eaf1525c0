"""The shipped example: synthetic transactions and the suspicious-chain rules (NOTES §3).

``write_example(dest, triples=...)`` writes a dataset folder the local runner (and
the reasoner's job script) can run as it is: ``transactions.nt``, the rule files
(``*.ru``) and the queries (``*.rq``).
"""

from pathlib import Path

from infergraph.reasoning.examples.transactions import (
    Dataset,
    Transaction,
    generate,
    write_example,
)

EXAMPLES = Path(__file__).resolve().parent
RULES = sorted(EXAMPLES.glob("*.ru"))
#: The same rules in RDFox Datalog, the reference's format.
DATALOG_RULES = sorted(EXAMPLES.glob("*.dlog"))
QUERIES = sorted(EXAMPLES.glob("*.rq"))
HIGH_VALUE_THRESHOLD = 10_000
MAX_CHAIN_LENGTH = 30

__all__ = [
    "DATALOG_RULES",
    "EXAMPLES",
    "HIGH_VALUE_THRESHOLD",
    "MAX_CHAIN_LENGTH",
    "QUERIES",
    "RULES",
    "Dataset",
    "Transaction",
    "generate",
    "write_example",
]
