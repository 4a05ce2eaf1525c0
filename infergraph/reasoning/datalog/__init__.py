"""RDFox Datalog (``*.dlog``) for the local runner: parsed, translated to SPARQL Update, run
semi-naively to a fixpoint on pyoxigraph."""

from infergraph.reasoning.datalog.evaluate import (
    DatalogNotStratified,
    FixpointNotReached,
    materialise_datalog,
    rule_update,
)
from infergraph.reasoning.datalog.parse import (
    DatalogError,
    DatalogSyntaxError,
    DatalogUnsupported,
    Program,
    parse_datalog,
)

__all__ = [
    "DatalogError",
    "DatalogNotStratified",
    "DatalogSyntaxError",
    "DatalogUnsupported",
    "FixpointNotReached",
    "Program",
    "materialise_datalog",
    "parse_datalog",
    "rule_update",
]
