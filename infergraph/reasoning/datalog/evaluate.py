"""Run parsed Datalog rules on a pyoxigraph store: SPARQL Update, stratified and semi-naive.

Each rule becomes one ``INSERT { head } WHERE { body FILTER NOT EXISTS { head } }``:
facts go straight into the store (a derivation whose whole head is known adds
nothing, so rounds end), and what a rule adds is also noted in the round's delta
graph: the subjects it touched, a marker that the rule fired, and the facts rules
read atom by atom. Rules are split into strata so a negated or aggregated predicate
is complete before it is read. Within a stratum the first round runs every rule on
everything; later rounds run only the rules reading a predicate a fired rule writes,
restricted to derivations that use last round's facts. A chain of length n is then
extended from the chains found last round instead of re-deriving every chain every
round, which is what made the SPARQL rules slow.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from infergraph.reasoning.datalog.parse import (
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
#: ``<s> <touched> <touched>`` in a delta graph: ``s`` is the subject of a fact added then;
#: ``<fired:N> <fired> <fired>``: rule N added facts then.
FIRED = "urn:infergraph:datalog:fired"
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


@dataclass(frozen=True)
class Delta:
    """How a re-run rule meets last round's facts (graph ``read``; new ones go to ``write``).

    ``subject``: the body's recursive atoms share this subject, which must be one touched
    last round (a marker in ``read``), so a star of atoms on a new subject is one query,
    not one per atom. ``atom``: that body atom reads ``read`` instead of the store.
    """

    read: str
    write: str
    subject: str | None = None
    atom: int | None = None


def rule_update(
    rule: Rule, delta: Delta | None = None, marker: str = "", facts: set[str] | None = None
) -> str:
    """The SPARQL Update of ``rule``: head into the store; with ``delta``, only derivations
    using last round's facts, and what is new also noted in ``delta.write``: each head
    subject touched, ``marker`` (the rule fired), and the facts whose keys are in ``facts``
    (those a non-star rule reads from the delta)."""
    head = " ".join(a.sparql() for a in rule.head)
    positive = [lit for lit in rule.body if isinstance(lit, Atom)]
    parts = []
    if delta is not None and delta.subject is not None:
        parts.append(f"GRAPH <{delta.read}> {{ {delta.subject} <{TOUCHED}> <{TOUCHED}> . }}")
    elif delta is not None and delta.atom is not None:
        parts.append(f"GRAPH <{delta.read}> {{ {positive[delta.atom].sparql()} }}")
    for i, atom in enumerate(positive):
        if delta is None or i != delta.atom:
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
    noted = ""
    if delta is not None:
        kept = [a for a in rule.head if any(_overlap(a.key, k) for k in facts or ())]
        touched = " ".join(
            f"{s} <{TOUCHED}> <{TOUCHED}> ." for s in sorted({a.s for a in rule.head})
        )
        fired = f"<{marker}> <{FIRED}> <{FIRED}> ." if marker else ""
        noted = (
            f"GRAPH <{delta.write}> {{ {' '.join(a.sparql() for a in kept)} {touched} {fired} }}"
        )
    return f"INSERT {{ {head} {noted} }} WHERE {{ {' '.join(parts)} }}"


def materialise_datalog(store: Any, programs: list[Program], max_rounds: int) -> int:
    """Run every stratum to its fixpoint; returns the rounds used (over all strata)."""
    rounds = 0
    for stratum in compile_program(programs):
        recursive = {k for c in stratum for k in c.writes}
        stars = {id(c): _star(c.rule, recursive) for c in stratum}
        # Facts a rule reads atom by atom must be in the delta; star rules need only markers.
        facts = {
            k
            for c in stratum
            if stars[id(c)] is None
            for a in c.rule.positive
            if any(_overlap(a.key, r) for r in recursive)
            for k in [a.key]
        }
        markers = {f"{FIRED}:{i}": c for i, c in enumerate(stratum)}
        read, write = DELTAS
        changed: set[str] | None = None  # None: the stratum's first round, run everything
        while changed is None or changed:
            rounds += 1
            if rounds > max_rounds:
                raise FixpointNotReached(max_rounds, len(store))
            for marker, c in markers.items():
                _apply(store, c, changed, Delta(read, write), marker, facts, stars[id(c)])
            store.update(f"CLEAR SILENT GRAPH <{read}>")
            changed = _changed(store, write, markers)
            read, write = write, read
        store.update(f"CLEAR SILENT GRAPH <{read}>")
    return rounds


def _star(rule: Rule, recursive: set[str]) -> str | None:
    """The subject variable every recursive body atom shares, if there is one."""
    atoms = [a for a in rule.positive if any(_overlap(a.key, k) for k in recursive)]
    subjects = {a.s for a in atoms}
    subject = subjects.pop() if len(subjects) == 1 else None
    return subject if subject and subject.startswith("?") else None


def _apply(
    store: Any,
    c: _Compiled,
    changed: set[str] | None,
    delta: Delta,
    marker: str,
    facts: set[str],
    star: str | None,
) -> None:
    rule = c.rule
    try:
        if changed is None:  # first round: the whole body, on everything
            store.update(rule_update(rule, Delta(delta.read, delta.write), marker, facts))
            return
        hit = [i for i, a in enumerate(rule.positive) if any(_overlap(a.key, k) for k in changed)]
        if hit and star is not None:
            variant = Delta(delta.read, delta.write, subject=star)
            store.update(rule_update(rule, variant, marker, facts))
            return
        for i in hit:
            variant = Delta(delta.read, delta.write, atom=i)
            store.update(rule_update(rule, variant, marker, facts))
    except SyntaxError as exc:  # an expression SPARQL rejects: still the rule's fault
        raise DatalogError(rule.file, rule.line, 1, f"rule does not translate: {exc}") from None


def _changed(store: Any, graph: str, markers: dict[str, _Compiled]) -> set[str]:
    """The head keys of the rules that added facts this round (their markers in ``graph``)."""
    rows = store.query(f"SELECT ?m WHERE {{ GRAPH <{graph}> {{ ?m <{FIRED}> <{FIRED}> }} }}")
    return {k for row in rows for k in markers[row["m"].value].writes}
