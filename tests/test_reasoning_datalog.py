"""RDFox Datalog on the local runner: the translation, its refusals, and the same chains as
the SPARQL rules and the plain-Python search."""

from __future__ import annotations

import json

import pytest
from pyoxigraph import DefaultGraph, RdfFormat, Store

from infergraph.reasoning.datalog import (
    DatalogNotStratified,
    DatalogSyntaxError,
    DatalogUnsupported,
    FixpointNotReached,
    materialise_datalog,
    parse_datalog,
)
from infergraph.reasoning.examples import DATALOG_RULES, RULES, generate
from infergraph.reasoning.examples.transactions import C, E
from infergraph.reasoning.jobspec import parse_jobspec
from infergraph.reasoning.runners.local import (
    MAX_ROUNDS,
    LocalRunFailed,
    materialise,
    run_local_job,
)
from tests.support.chains import reference_chains
from tests.support.reasoning_env import OUTPUT

EX = "http://example.org/"
PREFIX = f"@prefix : <{EX}> .\n"


def _store(turtle: str) -> Store:
    store = Store()
    store.load((f"@prefix : <{EX}> .\n" + turtle).encode(), RdfFormat.TURTLE)
    return store


def _run(store: Store, rules: str) -> int:
    return materialise_datalog(store, [parse_datalog(PREFIX + rules, "t.dlog")], MAX_ROUNDS)


def _has(store: Store, s: str, p: str, o: str) -> bool:
    term = o if o[0] in '"0123456789' else f"<{EX}{o}>"
    query = f"ASK {{ <{EX}{s}> <{EX}{p}> {term} }}"
    return bool(store.query(query))


def _triples(store: Store) -> set[str]:
    return {str(q.triple) for q in store.quads_for_pattern(None, None, None, DefaultGraph())}


def test_example_rules_in_both_forms_derive_the_same_chains():
    data = generate(6000, seed=5)
    text = "".join(data.ntriples()).encode()
    sparql, datalog = Store(), Store()
    for store in (sparql, datalog):
        store.bulk_load(text, RdfFormat.N_TRIPLES)
    materialise(sparql, [(p.name, p.read_text()) for p in RULES])
    materialise_datalog(datalog, [parse_datalog(p.read_text(), p.name) for p in DATALOG_RULES], 200)
    assert _triples(sparql) == _triples(datalog)  # every derived fact, not just counts
    chains = {
        tuple(q.subject.value.removeprefix(f"{E}chain_").split("."))
        for q in datalog.quads_for_pattern(None, None, None, DefaultGraph())
        if q.object.value == f"{C}Chain"
    }
    expected = reference_chains(data)
    assert expected["full"] and chains == expected["all"]
    assert len(datalog) == len(sparql)  # no bookkeeping graphs left behind


def test_translation_covers_filter_bind_negation_and_aggregates():
    store = _store(
        """
        :a :knows :b . :b :knows :c . :c :knows :a . :d :knows :a .
        :a :age 30 . :b :age 17 . :c :age 45 . :d :age 50 .
        :b :blocked true .
        """
    )
    _run(
        store,
        """
        # transitive reach, class atoms, arithmetic in FILTER and BIND
        [?x, :reaches, ?y] :- [?x, :knows, ?y] .
        [?x, :reaches, ?z] :- [?x, :reaches, ?y], :knows[?y, ?z] .
        :Adult[?x] :- [?x, :age, ?n], FILTER(?n * 2 >= 36 && ?n != 45) .
        [?x, :nextAge, ?m] :- [?x, a, :Adult], [?x, :age, ?n], BIND(?n + 1 AS ?m) .
        [?x, :open, ?y] :- [?x, :knows, ?y], NOT [?y, :blocked, true] .
        [?x, :lonely, true] :- [?x, :age, ?n],
            NOT EXISTS ?y IN ([?y, :knows, ?x], [?y, a, :Adult]) .
        [?y, :fans, ?n] :- AGGREGATE([?x, :knows, ?y] ON ?y BIND COUNT(?x) AS ?n) .
        """,
    )
    assert _has(store, "a", "reaches", "a") and _has(store, "d", "reaches", "c")
    assert not _has(store, "a", "reaches", "d")
    assert {r["x"].value for r in store.query(f"SELECT ?x {{ ?x a <{EX}Adult> }}")} == {
        f"{EX}a",
        f"{EX}d",
    }
    assert _has(store, "d", "nextAge", "51") and not _has(store, "b", "nextAge", "18")
    assert _has(store, "c", "open", "a") and not _has(store, "a", "open", "b")
    # b is known only by a (an Adult); c only by b (not one); a by c and the Adult d.
    assert _has(store, "c", "lonely", '"true"^^<http://www.w3.org/2001/XMLSchema#boolean>')
    assert not _has(store, "b", "lonely", '"true"^^<http://www.w3.org/2001/XMLSchema#boolean>')
    assert _has(store, "a", "fans", "2") and _has(store, "b", "fans", "1")


@pytest.mark.parametrize(
    ("text", "line", "column", "message"),
    [
        ("[?x, :p, ?y] :- [?x, :q ?y] .", 2, 25, "expected ']', got '?y'"),
        ("[?x, :p, ?y] :- [?x, :q, ?y]\n[?a, :b, ?c] .", 3, 1, "expected ',' or '.'"),
        ("[?x, :p, ?y] :- [?x, ex:q, ?y] .", 2, 22, "undeclared prefix 'ex:'"),
        ("[?x, :p, ?z] :- [?x, :q, ?y] .", 2, 1, "head variable ?z is not bound"),
        ("[?x, :p, ?y] :- [?x, :q, ?y], FILTER(?y > 1 .", 2, 45, "missing ')'"),
    ],
)
def test_syntax_errors_give_line_and_column(text, line, column, message):
    with pytest.raises(DatalogSyntaxError) as exc:
        parse_datalog(PREFIX + text, "bad.dlog")
    assert (exc.value.line, exc.value.column) == (line, column)
    assert str(exc.value).startswith(f"bad.dlog:{line}:{column}: ") and message in str(exc.value)


@pytest.mark.parametrize(
    ("text", "construct"),
    [
        ("[?x, :p, ?y] :- [?x, :q, ?y, :g] .", "quad atom"),
        ("[?x, :p, ?y] :- [?x, :q, ?y], OPTIONAL [?y, :r, ?z] .", "OPTIONAL"),
        ('[?x, :p, ?s] :- [?x, :q, ?y], BIND(SKOLEM("c", ?y) AS ?s) .', "function SKOLEM"),
        ("[?x, :p, ?y] :- :t[?x, ?y, ?z] .", "tuple table atom"),
        ("[?x, :p, ?y] :- [?x, :q, ?y], MINUS [?y, :r, ?x] .", "MINUS"),
    ],
)
def test_unsupported_constructs_name_file_line_and_construct(text, construct):
    with pytest.raises(DatalogUnsupported) as exc:
        parse_datalog(PREFIX + "\n" + text, "odd.dlog")
    assert exc.value.line == 3 and construct in exc.value.construct
    assert str(exc.value).startswith("odd.dlog:3:")


def test_negation_through_recursion_is_refused():
    program = parse_datalog(
        PREFIX + "[?x, :p, ?y] :- [?x, :q, ?y], NOT [?x, :r, ?y] .\n[?x, :r, ?y] :- [?x, :p, ?y] .",
        "loop.dlog",
    )
    with pytest.raises(DatalogNotStratified, match="not stratifiable"):
        materialise_datalog(Store(), [program], 10)


def test_runaway_datalog_fails_with_the_round_count():
    store = _store(":a :n 0 .")
    program = parse_datalog(PREFIX + "[?x, :n, ?m] :- [?x, :n, ?k], BIND(?k + 1 AS ?m) .", "c")
    with pytest.raises(FixpointNotReached, match="within 25 rounds") as exc:
        materialise_datalog(store, [program], 25)
    assert exc.value.rounds == 25


def _spec(folder) -> object:
    body = {"job_key": "d", "output_bucket": OUTPUT, "dataset_uri": str(folder)}
    return parse_jobspec(json.dumps(body), "local")


def test_local_run_refuses_unsupported_datalog_before_any_work(aws, tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "data.nt").write_text(f"<{EX}a> <{EX}q> <{EX}b> .\n")
    (tmp_path / "d" / "rules.dlog").write_text(
        PREFIX
        + "[?x, :p, ?y] :- [?x, :q, ?y] .\n[?x, :p, ?y] :- [?x, :q, ?y], OPTIONAL [?y, :r, ?x] .\n"
    )
    with pytest.raises(LocalRunFailed) as failed:
        run_local_job(_spec(tmp_path / "d"), "d_2024-01-01_000", aws)
    assert "rules.dlog:3:" in str(failed.value) and "OPTIONAL" in str(failed.value)
    assert "LOADTIME-" not in failed.value.log  # refused before loading anything


def test_local_run_reports_runaway_datalog(aws, tmp_path):
    from infergraph.aws.clients import aws_client

    aws_client("s3", aws).create_bucket(Bucket=OUTPUT)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "data.nt").write_text(
        f'<{EX}a> <{EX}n> "0"^^<http://www.w3.org/2001/XMLSchema#integer> .\n'
    )
    (tmp_path / "d" / "count.dlog").write_text(
        PREFIX + "[?x, :n, ?m] :- [?x, :n, ?k], BIND(?k + 1 AS ?m) .\n"
    )
    with pytest.raises(LocalRunFailed, match=f"within {MAX_ROUNDS} rounds"):
        run_local_job(_spec(tmp_path / "d"), "d_2024-01-01_000", aws)


@pytest.mark.usefixtures("prefect_server")
def test_reference_jobspec_with_datalog_rules_runs_end_to_end(aws, tmp_path):
    """The reference's jobspec, unchanged but for the local runner, on the .dlog example."""
    from pathlib import Path

    from flows.reasoning import refresh_bulk_loads, schedule_reasoning_job
    from infergraph.reasoning.examples import write_example
    from tests.support.reasoning_env import INPUT, make_env

    env = make_env(aws, tmp_path)
    data = write_example(
        f"s3://{INPUT}/transactions/", 3000, seed=7, credentials=aws, rules="datalog"
    )
    reference = Path(__file__).parent / "fixtures" / "reasoning" / "reference.rdfoxjob.json"
    body = json.loads(reference.read_text())
    body["neptune_configuration"].pop("iam_role")
    body["surplus_key"] = 1
    env.put_jobspec("jobs/ref.rdfoxjob.json", body)
    result = schedule_reasoning_job(
        INPUT,
        "jobs/ref.rdfoxjob.json",
        jobs_table=env.table,
        notices=env.topic,
        aws_credentials=aws,
        process_after_local_run=True,
        graph_store=env.graph,
    )
    assert result["status"] == "NEPTUNE_LOAD_IN_PROGRESS", result
    refreshed = refresh_bulk_loads(jobs_table=env.table, notices=env.topic, graph_store=env.graph)
    assert [n["status"] for n in refreshed["notified"]] == ["SUCCESS_NOTIFICATION_SENT"]
    job = env.store.get_by_id(result["job_id"], "transactions")
    expected = reference_chains(data)
    assert job.get("reasoner")["counts"] == {
        "partialChainCount": len(expected["all"]) - len(expected["full"]),
        "fullChainCount": len(expected["full"]),
        "highValueChainCount": len(expected["high"]),
    }
    assert job.get("load")["request"]["format"] == "turtle"
    assert "surplus_key: unknown key, ignored" in job.get("jobspec_warnings")
    (notice,) = env.notices()
    assert "Jobspec warning: surplus_key: unknown key, ignored" in notice["Message"]
