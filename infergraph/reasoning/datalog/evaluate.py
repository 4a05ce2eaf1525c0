"""Run parsed Datalog rules on a pyoxigraph store: SPARQL Update, stratified and semi-naive.

Each rule becomes one ``INSERT { head, and head again in <next> } WHERE { body, FILTER
NOT EXISTS { head } }``: facts go straight into the store, and whatever a rule adds is
also written to the round's ``<next>`` delta graph (a derivation whose whole head is
already known adds nothing, so rounds end). Rules are split into strata so a negated or
aggregated predicate is complete before it is read. Within a stratum the first round
runs every rule on everything; later rounds run only the rules that read a predicate
which changed in the last round, restricted to derivations that use a last-round fact
(graph ``<delta>``). A chain of length n is then extended from the chains found last
round instead of re-deriving every chain every round, which made the SPARQL rules slow.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from infergraph.reasoning.datalog.parse import (
    RDF_TYPE,
    Aggregate,
    Atom,
    Bind,
    DatalogError,
    Filter,
    Negation,
    Program,
    Rule,
)

#: The two delta graphs swap roles each round: one is read (last round's facts), one written.
DELTAS = ("urn:infergraph:datalog:delta-a", "urn:infergraph:datalog:delta-b")
#: ``<s> <touched> <touched>`` in a delta graph: ``s`` is the subject of a fact added then.
TOUCHED = "urn:infergraph:datalog:touched"
ANY = "*"


class DatalogNotStratified(DatalogError):
    """A predicate that depends on its own negation or aggregate: no single fixpoint."""


class FixpointNotReached(RuntimeError):
    def __init__(self, rounds: int, facts: int):
        self.rounds = rounds
        super().__init__(
            f"rules did not reach a fixpoint within {rounds} rounds ({facts} facts): "
            "check them for unbounded derivations"
        )


@dataclass
class _Compiled:
    rule: Rule
    reads: set[str]  # keys of positive body atoms
    needs: set[str]  # keys read under negation or aggregation (must be complete first)
    writes: set[str]
    stratum: int = 0


def compile_program(programs: Iterable[Program]) -> list[list[_Compiled]]:
    """Rules grouped by stratum, lowest first; :class:`DatalogNotStratified` if impossible."""
    compiled = []
    for program in programs:
        for rule in program.rules:
            needs: set[str] = set()
            for lit in rule.body:
                if isinstance(lit, Negation | Aggregate):
                    needs |= {a.key for a in lit.atoms}
            compiled.append(
                _Compiled(rule, {a.key for a in rule.positive}, needs, {a.key for a in rule.head})
            )
    level: dict[str, int] = {}
    heads = {k for c in compiled for k in c.writes}
    for _ in range(len(heads) + 2):
        changed = False
        for c in compiled:
            want = max(
                [0]
                + [level.get(k, 0) for k in _written(c.reads, compiled)]
                + [level.get(k, 0) + 1 for k in _written(c.needs, compiled)]
            )
            for key in c.writes:
                if level.get(key, 0) < want:
                    level[key], changed = want, True
        if not changed:
            break
    else:
        culprit = next(c for c in compiled if c.needs & _reachable(c.writes, compiled))
        rule = culprit.rule
        raise DatalogNotStratified(
            rule.file,
            rule.line,
            1,
            "negation or aggregation through recursion (a predicate depends on its own "
            "negation or aggregate): the rules are not stratifiable",
        )
    for c in compiled:
        c.stratum = max(level.get(k, 0) for k in c.writes)
    strata = sorted({c.stratum for c in compiled})
    return [[c for c in compiled if c.stratum == s] for s in strata]


def _written(keys: set[str], compiled: list[_Compiled]) -> set[str]:
    """The head keys that can produce facts matching ``keys`` (``*`` matches everything)."""
    heads = {k for c in compiled for k in c.writes}
    return {h for h in heads if any(_overlap(h, k) for k in keys)}


def _reachable(keys: set[str], compiled: list[_Compiled]) -> set[str]:
    seen = set(keys)
    while True:
        more = {
            k for c in compiled if _written(c.reads | c.needs, compiled) & seen for k in c.writes
        }
        if more <= seen:
            return seen
        seen |= more


def _overlap(a: str, b: str) -> bool:
    if ANY in (a, b) or a == b:
        return True
    # <rdf:type> and <rdf:type> <C> share facts.
    return a.split(" ", 1)[0] == b.split(" ", 1)[0] and (" " not in a or " " not in b)


def rule_update(
    rule: Rule, delta: tuple[int, ...] = (), read: str = DELTAS[0], write: str = DELTAS[1]
) -> str:
    """The SPARQL Update of ``rule``; with ``delta`` (body atom indexes), only derivations
    that use a fact of graph ``read`` in one of those atoms. New facts also go to ``write``.

    One atom: it reads ``read`` instead of the store. Several on one subject variable:
    that subject must be one touched last round (a marker triple in ``read``), and the
    whole body reads the store, so a star of atoms on one new subject is one query, not
    one per atom (a superset of the derivations, and still proportional to the delta).
    """
    head = " ".join(a.sparql() for a in rule.head)
    subjects = sorted({a.s for a in rule.head})
    touched = " ".join(f"{s} <{TOUCHED}> <{TOUCHED}> ." for s in subjects)
    positive = [lit for lit in rule.body if isinstance(lit, Atom)]
    parts = []
    if len(delta) > 1:
        subject = shared_subject(rule, delta)
        if subject is None:
            raise ValueError("several delta atoms need one subject variable")
        parts.append(f"GRAPH <{read}> {{ {subject} <{TOUCHED}> <{TOUCHED}> . }}")
        delta = ()
    if delta:
        parts.append(f"GRAPH <{read}> {{ {positive[delta[0]].sparql()} }}")
    for i, atom in enumerate(positive):
        if i not in delta:
            parts.append(atom.sparql())
    for lit in rule.body:
        if isinstance(lit, Aggregate):
            inner = " ".join(a.sparql() for a in lit.atoms)
            selected = " ".join(f"({expr} AS {var})" for expr, var in lit.bindings)
            group = f" GROUP BY {' '.join(lit.group)}" if lit.group else ""
            parts.append(
                f"{{ SELECT {' '.join(lit.group)} {selected} WHERE {{ {inner} }}{group} }}"
            )
    for lit in rule.body:
        if isinstance(lit, Bind):
            parts.append(f"BIND({lit.expression} AS {lit.variable})")
        elif isinstance(lit, Filter):
            parts.append(f"FILTER({lit.expression})")
        elif isinstance(lit, Negation):
            inner = " ".join(a.sparql() for a in lit.atoms)
            parts.append(f"FILTER NOT EXISTS {{ {inner} }}")
    parts.append(f"FILTER NOT EXISTS {{ {head} }}")
    return (
        f"INSERT {{ {head} GRAPH <{write}> {{ {head} {touched} }} }} WHERE {{ {' '.join(parts)} }}"
    )


def materialise_datalog(store: Any, programs: list[Program], max_rounds: int) -> int:
    """Run every stratum to its fixpoint; returns the rounds used (over all strata)."""
    strata = compile_program(programs)
    rounds = 0
    for stratum in strata:
        read, write = DELTAS
        changed: set[str] | None = None  # None: the stratum's first round, run everything
        while changed is None or changed:
            rounds += 1
            if rounds > max_rounds:
                raise FixpointNotReached(max_rounds, len(store))
            for c in stratum:
                _apply(store, c, changed, read, write)
            store.update(f"CLEAR SILENT GRAPH <{read}>")
            changed = _changed(store, write)
            read, write = write, read
        store.update(f"CLEAR SILENT GRAPH <{read}>")
    return rounds


def _apply(store: Any, c: _Compiled, changed: set[str] | None, read: str, write: str) -> None:
    rule = c.rule
    try:
        if changed is None:
            store.update(rule_update(rule, (), read, write))
            return
        if not rule.body:
            return
        hit = tuple(
            i for i, atom in enumerate(rule.positive) if any(_overlap(atom.key, k) for k in changed)
        )
        if len(hit) > 1 and shared_subject(rule, hit):
            store.update(rule_update(rule, hit, read, write))
        else:
            for i in hit:
                store.update(rule_update(rule, (i,), read, write))
    except SyntaxError as exc:  # an expression SPARQL rejects: still the rule's fault
        raise DatalogError(rule.file, rule.line, 1, f"rule does not translate: {exc}") from None


def _changed(store: Any, graph: str) -> set[str]:
    """The keys (predicate, or rdf:type and class) of the facts in delta ``graph``."""
    rows = store.query(
        f"SELECT DISTINCT ?p ?c WHERE {{ GRAPH <{graph}> {{ ?s ?p ?o }} "
        f"FILTER(?p != <{TOUCHED}>) BIND(IF(?p = <{RDF_TYPE}> && isIRI(?o), ?o, ?none) AS ?c) }}"
    )
    changed = set()
    for row in rows:
        predicate, cls = row["p"], row["c"]
        changed.add(
            f"<{predicate.value}> <{cls.value}>" if cls is not None else f"<{predicate.value}>"
        )
    return changed


def shared_subject(rule: Rule, atoms: tuple[int, ...]) -> str | None:
    subjects = {rule.positive[i].s for i in atoms}
    subject = subjects.pop() if len(subjects) == 1 else None
    return subject if subject and subject.startswith("?") else None
