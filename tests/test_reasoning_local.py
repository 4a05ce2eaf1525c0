"""The local runner's chains against an independent plain-Python search on the same data."""

from __future__ import annotations

import json
from collections import defaultdict

import pytest
from pyoxigraph import RdfFormat, parse

from infergraph.reasoning.examples import (
    generate,
    write_example,
)
from infergraph.reasoning.examples.transactions import RDF_TYPE, C, E, P
from infergraph.reasoning.jobspec import parse_jobspec
from infergraph.reasoning.rdfox_log import parse_rdfox_log
from infergraph.reasoning.runners.local import LocalRunFailed, run_local_job
from tests.support.chains import Path_, reference_chains
from tests.support.reasoning_env import OUTPUT


def exported(s3, key: str) -> dict[Path_, dict[str, str]]:
    body = s3.get_object(Bucket=OUTPUT, Key=key)["Body"].read()
    chains: dict[Path_, dict[str, str]] = defaultdict(dict)
    for triple in parse(body, RdfFormat.N_TRIPLES):
        path = tuple(triple.subject.value.removeprefix(f"{E}chain_").split("."))
        chains[path][triple.predicate.value.removeprefix(P)] = triple.object.value
    return dict(chains)


@pytest.mark.parametrize(
    ("triples", "seed", "rules"),
    [(4000, 1, "sparql"), (12_000, 2, "sparql"), (4000, 1, "datalog"), (12_000, 2, "datalog")],
)
def test_chains_match_plain_python(aws, tmp_path, triples, seed, rules):
    s3 = aws_s3(aws)
    data = write_example(tmp_path / "tx", triples=triples, seed=seed, rules=rules)
    expected = reference_chains(data)
    assert expected["full"] and expected["high"]  # the data exercises every rule
    spec = parse_jobspec(
        json.dumps({"job_key": "tx", "output_bucket": OUTPUT, "dataset_uri": str(tmp_path / "tx")}),
        "local",
    )
    result = run_local_job(spec, "tx_2024-01-01_001", aws)

    prefix = "tx/tx_2024-01-01_001/"
    suspicious = exported(s3, prefix + "data/export_suspicious_chains.rq.nt")
    high = exported(s3, prefix + "data/export_high_value_chains.rq.nt")
    assert set(suspicious) == expected["full"]
    assert set(high) == expected["high"]
    amounts = {t.id: t.amount for t in data.transactions}
    for path, props in {**suspicious, **high}.items():
        assert props["chainLength"] == str(len(path))
        assert props["chainStart"] == f"{E}{path[0]}" and props["chainEnd"] == f"{E}{path[-1]}"
        assert float(props["chainMinAmount"]) == min(amounts[t] for t in path)
    assert {p[RDF_TYPE] for p in suspicious.values()} == {f"{C}SuspiciousChain"}
    assert {p[RDF_TYPE] for p in high.values()} == {f"{C}HighValueChain"}

    stats = parse_rdfox_log(s3.get_object(Bucket=OUTPUT, Key=prefix + "rdfox.log")["Body"].read())
    assert stats.counts == {
        "partialChainCount": len(expected["all"]) - len(expected["full"]),
        "fullChainCount": len(expected["full"]),
        "highValueChainCount": len(expected["high"]),
    }
    assert stats.edb_facts == data.triple_count
    assert stats.exported == {
        "export_high_value_chains.rq": sum(len(p) for p in high.values()),
        "export_suspicious_chains.rq": sum(len(p) for p in suspicious.values()),
    }
    longest = max(len(p) for p in expected["all"])
    if rules == "sparql":
        # Rules run in file order, so round 1 already extends new chains once; the last adds
        # nothing.
        assert result.rounds == longest
    else:
        # Semi-naive: about one round per chain length (rules run in order, so round 1 may
        # already extend), and one that adds nothing.
        assert longest <= result.rounds <= longest + 2
    for phase in ("load", "inference", "query", "total"):
        assert getattr(stats, f"{phase}_seconds") is not None


def aws_s3(aws):
    from infergraph.aws.clients import aws_client

    s3 = aws_client("s3", aws)
    s3.create_bucket(Bucket=OUTPUT)
    return s3


def test_runaway_rules_stop_with_a_reason(aws, tmp_path):
    aws_s3(aws)
    folder = tmp_path / "loop"
    folder.mkdir()
    (folder / "d.nt").write_text(
        '<http://a> <http://n> "0"^^<http://www.w3.org/2001/XMLSchema#integer> .\n'
    )
    (folder / "count.ru").write_text(
        "INSERT { <http://a> <http://n> ?m } WHERE { <http://a> <http://n> ?k BIND(?k + 1 AS ?m) }"
    )
    spec = parse_jobspec(
        json.dumps({"job_key": "loop", "output_bucket": OUTPUT, "dataset_uri": str(folder)}),
        "local",
    )
    with pytest.raises(LocalRunFailed, match="did not reach a fixpoint") as failed:
        run_local_job(spec, "loop_2024-01-01_001", aws)
    assert "LOADTIME-" in failed.value.log  # the partial log is kept for the record


def test_empty_dataset_folder_is_a_clear_failure(aws, tmp_path):
    (tmp_path / "empty").mkdir()
    spec = parse_jobspec(
        json.dumps(
            {"job_key": "e", "output_bucket": OUTPUT, "dataset_uri": str(tmp_path / "empty")}
        ),
        "local",
    )
    with pytest.raises(LocalRunFailed, match="no data files"):
        run_local_job(spec, "e_2024-01-01_001", aws)


def test_generator_is_deterministic_and_sized():
    a, b = generate(5000, seed=3), generate(5000, seed=3)
    assert "".join(a.ntriples()) == "".join(b.ntriples())
    assert "".join(generate(5000, seed=4).ntriples()) != "".join(a.ntriples())
    for size in (1000, 100_000):
        data = generate(size)
        assert abs(data.triple_count - size) / size < 0.01
        assert sum(1 for _ in data.ntriples()) == data.triple_count
        assert data.suspicious and len(data.suspicious) < len(data.parties)
