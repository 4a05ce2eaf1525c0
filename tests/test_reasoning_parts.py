"""Reasoning parts that need no flow: the log parser, the jobspec, the manifest, notices,
and the local Oxigraph loader (in process and behind ``oxigraph serve``)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from blocks.oxigraph import OxigraphStore
from infergraph.aws.clients import aws_client
from infergraph.reasoning.jobs import Job, JobStatus
from infergraph.reasoning.jobspec import JobSpecError, parse_jobspec
from infergraph.reasoning.loaders import (
    LoadRefused,
    LoadRequest,
    OxigraphLoader,
    build_load_request,
)
from infergraph.reasoning.loaders.base import block_loader_defaults
from infergraph.reasoning.notices import notice_body, notice_subject
from infergraph.reasoning.rdfox_log import LogParseError, human_duration, parse_rdfox_log
from infergraph.reasoning.runners import kubernetes as k8s_job
from tests.support.servers import free_port, wait_for_http

# -- the reasoner's log -------------------------------------------------------------------------


@pytest.fixture
def real_log(fixtures_dir) -> bytes:
    return (fixtures_dir / "reasoning" / "rdfox.log").read_bytes()


def test_real_log_parses_to_the_exact_values(real_log):
    stats = parse_rdfox_log(real_log)
    assert stats.load_seconds == 254
    assert stats.inference_seconds == 1621
    assert stats.query_seconds == 4355
    assert stats.total_seconds == 1875
    assert stats.edb_facts == 510_506_725
    assert stats.idb_facts == 787_421_291
    assert stats.bytes_per_entry == 101.891
    assert stats.counts == {"partialChainCount": 1337, "fullChainCount": 2667}
    assert stats.materialization_seconds == 1617.16
    assert stats.exported == {"extract1.rq": 15_157_104, "extract3.rq": 1_659_850_615}


def test_crlf_log_parses_the_same(real_log):
    assert parse_rdfox_log(real_log.replace(b"\n", b"\r\n")) == parse_rdfox_log(real_log)


def test_missing_sections_are_absent_not_zero(real_log):
    text = real_log.decode()
    head = text[: text.index("---info---")]  # the pod died before the info and counts
    stats = parse_rdfox_log(head)
    assert (stats.load_seconds, stats.inference_seconds, stats.query_seconds) == (254, 1621, 4355)
    assert stats.total_seconds is None and stats.edb_facts is None and stats.bytes_per_entry is None
    assert stats.counts == {}
    record = stats.as_record()
    assert "edb_facts" not in record and "counts" not in record and "total_seconds" not in record
    only_counts = parse_rdfox_log("running-counts\r\nfullChainCount\r\n2667\r\nend-running-counts")
    assert only_counts.as_record() == {"counts": {"fullChainCount": 2667}}


@pytest.mark.parametrize(
    "text", [b"", b"\xff\xfe garbage", b"Segmentation fault (core dumped)\n", b"LOADTIME\nfoo\n"]
)
def test_log_without_expected_lines_is_an_error(text):
    with pytest.raises(LogParseError, match="none of the reasoner's lines") as exc:
        parse_rdfox_log(text, "s3://out/ds/ds_2024-01-01_001/rdfox.log")
    assert "s3://out/ds/ds_2024-01-01_001/rdfox.log" in str(exc.value)


def test_unreadable_phase_time_is_reported_not_guessed():
    stats = parse_rdfox_log(
        "LOADTIME-yesterday|today\nINFERENCETIME-30-Jul-2021 19:45:17|30-Jul-2021 20:12:18\n"
    )
    assert stats.load_seconds is None and stats.inference_seconds == 1621
    assert stats.problems == ["load time line has unreadable times 'yesterday' | 'today'"]


def test_human_durations():
    assert human_duration(4355) == "1 h 12 min 35 s"
    assert human_duration(254) == "4 min 14 s"
    assert human_duration(0.25) == "0.25 s"
    assert human_duration(None) == "unknown"


# -- the jobspec --------------------------------------------------------------------------------

URI = "s3://in/jobs/x.rdfoxjob.json"


def test_jobspec_defaults_are_the_reference_defaults():
    spec = parse_jobspec(
        json.dumps({"job_bucket": "inp", "job_key": "ds", "output_bucket": "out"}), URI
    )
    assert (spec.requested_cores, spec.requested_memory) == (4, "2Gi")
    assert (spec.license_secret_name, spec.auto_shutdown) == ("rdfox-license", False)
    assert (spec.namespace, spec.service_account) == ("ns-rdfox", "rdfox-service-account")
    assert (spec.rdfox_port, spec.restart_policy, spec.parallelism) == (12110, "Never", 1)
    assert spec.runner == "local" and spec.dataset_location == "s3://inp/ds/"
    cfg = spec.neptune_configuration
    # Loader settings left out of a jobspec come from the graph store block, whose defaults
    # are the reference's.
    assert (cfg.source_format, cfg.mode, cfg.fail_on_error, cfg.parallelism) == (None,) * 4
    request = build_load_request(spec, "s3://out/ds/j/data/", defaults=None)
    assert (request.format, request.fail_on_error, request.queue_request) == ("turtle", False, True)
    assert request.update_single_cardinality_properties is True
    block = OxigraphStore(path="/tmp/x", fail_on_error=True, source_format="ntriples")
    request = build_load_request(spec, "s3://out/ds/j/data/", defaults=block_loader_defaults(block))
    assert (request.format, request.fail_on_error) == ("ntriples", True)
    spec = parse_jobspec(
        json.dumps(
            {
                "job_bucket": "inp",
                "job_key": "ds",
                "output_bucket": "out",
                "neptune_configuration": {"fail_on_error": "false"},
            }
        ),
        URI,
    )
    request = build_load_request(spec, "s3://out/ds/j/data/", defaults=block_loader_defaults(block))
    assert request.fail_on_error is False  # the jobspec overrides the block


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"job_key": "ds", "output_bucket": "out", "job_bucket": "inp", "auto_shutdown": "yes"},
            "auto_shutdown: Input should be a valid boolean",
        ),
        (
            {"job_key": "ds", "output_bucket": "out", "job_bucket": "inp", "rdfox_port": 70000},
            "rdfox_port: Input should be less than or equal to 65535",
        ),
        (
            {"job_key": "ds", "output_bucket": "out"},
            "job_bucket: required unless dataset_uri is given",
        ),
        (
            {"job_key": "a/b", "output_bucket": "out", "job_bucket": "inp"},
            "job_key: must be 1-63 letters",
        ),
        (
            {"job_key": "ds", "output_bucket": "out", "job_bucket": "inp", "runner": "kubernetes"},
            "init_container_image, publisher_container_image",
        ),
        (
            {
                "job_key": "ds",
                "output_bucket": "out",
                "job_bucket": "inp",
                "neptune_configuration": {"source_format": "xml"},
            },
            "neptune_configuration.source_format: Input should be",
        ),
        (
            {"job_key": "ds", "output_bucket": "out", "job_bucket": "inp", "requested_cores": -4},
            "requested_cores: Input should be greater than or equal to 1",
        ),
        (
            {"job_key": "ds", "output_bucket": "out", "job_bucket": "In_Bucket"},
            "job_bucket: must be an S3 bucket name",
        ),
    ],
)
def test_jobspec_errors_name_the_field_and_the_file(body, message):
    with pytest.raises(JobSpecError) as exc:
        parse_jobspec(json.dumps(body), URI)
    assert message in str(exc.value) and URI in str(exc.value)


# -- the Kubernetes manifest --------------------------------------------------------------------


def kube_spec():
    return parse_jobspec(
        json.dumps(
            {
                "job_bucket": "inp",
                "job_key": "Big_Data.v2",
                "output_bucket": "out",
                "runner": "kubernetes",
                "init_container_image": "aws-cli",
                "publisher_container_image": "aws-cli",
                "rdfox_container_image": "rdfox",
                "rdfox_init_container_image": "busybox",
                "rdfox_password_secret": "rdfox-password",
            }
        ),
        URI,
    )


def test_manifest_validates_and_names_are_kubernetes_safe():
    files = k8s_job.DatasetFiles(["r.dlog"], ["d.nt"], ["e.rq"], [])
    manifest = k8s_job.build_manifest(kube_spec(), "Big_Data.v2_2024-01-01_001", files)
    k8s_job.validate_manifest(manifest)
    assert manifest["metadata"]["name"] == "reasoning-big-data-v2-2024-01-01-001"
    assert manifest["metadata"]["labels"]["infergraph/job-id"] == "Big_Data.v2_2024-01-01_001"
    long_id = "x" * 60 + "_2024-01-01_001"
    assert len(k8s_job.job_name(long_id)) <= 63
    assert k8s_job.job_name(long_id) != k8s_job.job_name("y" + long_id[1:])


def test_invalid_manifest_names_the_path():
    files = k8s_job.DatasetFiles([], ["d.nt"], [], [])
    manifest = k8s_job.build_manifest(kube_spec(), "ds_2024-01-01_001", files)
    manifest["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] = ["8"]
    with pytest.raises(k8s_job.ManifestError, match=r"containers\.0\.resources\.limits\.cpu"):
        k8s_job.validate_manifest(manifest)


def test_queries_are_split_into_exports_and_counts():
    texts = {
        "e.rq": "PREFIX s: <http://x/select#>\nCONSTRUCT { ?s ?p ?o } WHERE { ?s ?p ?o }",
        "c.rq": "# a CONSTRUCT-free count\nSELECT (COUNT(*) AS ?n) WHERE { ?s ?p ?o }",
    }
    files = k8s_job.classify_files(
        ["a.dlog", "d.nt", "e.rq", "c.rq", "notes.txt"], texts, kube_spec()
    )
    assert files == k8s_job.DatasetFiles(["a.dlog"], ["d.nt"], ["e.rq"], ["c.rq"])


# -- notices --------------------------------------------------------------------------------------


def test_subject_is_the_reference_format_within_sns_limits():
    assert notice_subject("ds_2024-01-01_001", JobStatus.NEPTUNE_LOAD_COMPLETED) == (
        "Inference Result Notification for ds_2024-01-01_001 - NEPTUNE_LOAD_COMPLETED"
    )
    long = notice_subject(
        "d" * 63 + "_2024-01-01_001",
        JobStatus.NEPTUNE_LOAD_DATA_FAILED_DUE_TO_FEED_MODIFIED_OR_DELETED,
    )
    assert len(long) == 100 and "_2024-01-01_001 - NEPTUNE_LOAD_DATA_FAI" in long


def test_body_reports_times_in_human_units(real_log):
    stats = parse_rdfox_log(real_log).as_record()
    job = Job(
        "ds",
        "2024-01-01_001",
        JobStatus.NEPTUNE_LOAD_COMPLETED,
        5,
        {
            "reasoner": stats,
            "completed_at": "2024-01-01T10:00:00+00:00",
            "load": {
                "load_id": "L1",
                "store": "neptune",
                "overall": {
                    "totalTimeSpent": 3014,
                    "totalRecords": 41220091,
                    "totalDuplicates": 15957104,
                    "parsingErrors": 0,
                    "datatypeMismatchErrors": 0,
                    "insertErrors": 0,
                },
            },
        },
    )
    body = notice_body(job)
    assert (
        "Reasoning time: load 4 min 14 s, inference 27 min 1 s, "
        "queries 1 h 12 min 35 s, total 31 min 15 s" in body
    )
    assert "Facts: EDB 510,506,725, IDB 787,421,291 (101.891 bytes per entry)" in body
    assert "Chain counts: fullChainCount 2,667, partialChainCount 1,337" in body
    assert "Time to load: 50 min 14 s; triples loaded: 41,220,091 (15,957,104 duplicates)" in body
    assert "Completed: 2024-01-01T10:00:00+00:00" in body and "Errors: none" in body
    # The reference's own lines come first, in its terms (hours), before infergraph's extras.
    assert body.startswith(
        "Dataset: ds\n"
        "Completed: 2024-01-01T10:00:00+00:00\n"
        "Status: NEPTUNE_LOAD_COMPLETED\n"
        "Full chain count: 2,667\n"
        "Partial chain count: 1,337\n"
        "Error count: 0\n"
        "Time to infer: 0.45 hours\n"
        "Time to load: 0.84 hours\n"
    )


# -- the local graph store ------------------------------------------------------------------------

GOOD = b'<http://e/a> <http://e/p> <http://e/b> .\n<http://e/a> <http://e/q> "x" .\n'
BAD = b"<http://e/c> <http://e/p> <http://e/d> .\nnot a triple\n" + GOOD.splitlines(True)[0]


@pytest.fixture
def source(aws):
    s3 = aws_client("s3", aws)
    s3.create_bucket(Bucket="loads")
    s3.put_object(Bucket="loads", Key="good/data/a.nt", Body=GOOD)
    s3.put_object(Bucket="loads", Key="mixed/data/a.nt", Body=GOOD)
    s3.put_object(Bucket="loads", Key="mixed/data/b.nt", Body=BAD)
    return aws


def test_parse_error_fails_the_load_and_inserts_nothing(source, tmp_path):
    loader = OxigraphLoader(OxigraphStore(path=str(tmp_path / "g"), credentials=source))
    status = loader.status(loader.start(LoadRequest(source="s3://loads/mixed/data/")))
    assert status.status == "LOAD_FAILED"
    assert status.overall["parsingErrors"] == 1
    (error,) = status.errors
    assert error["fileName"] == "s3://loads/mixed/data/b.nt" and error["recordNum"] == 2
    assert loader.verify(LoadRequest(source="x"))["count"] == 0


def test_fail_on_error_false_loads_the_good_records(source, tmp_path):
    loader = OxigraphLoader(OxigraphStore(path=str(tmp_path / "g"), credentials=source))
    request = LoadRequest(
        source="s3://loads/mixed/data/", fail_on_error=False, named_graph="http://g"
    )
    status = loader.status(loader.start(request))
    assert status.status == "LOAD_COMPLETED"
    assert status.overall["totalRecords"] == 4 and status.overall["totalDuplicates"] == 1
    assert status.overall["parsingErrors"] == 1
    assert loader.verify(request)["count"] == 3
    assert loader.verify(LoadRequest(source="x"))["count"] == 0  # the default graph is untouched


def test_dependencies_and_missing_sources(source, tmp_path):
    loader = OxigraphLoader(OxigraphStore(path=str(tmp_path / "g"), credentials=source))
    first = loader.start(LoadRequest(source="s3://loads/good/data/"))
    ok = loader.status(
        loader.start(LoadRequest(source="s3://loads/good/data/", dependencies=(first,)))
    )
    assert ok.status == "LOAD_COMPLETED" and ok.overall["totalDuplicates"] == 2
    waits = loader.status(
        loader.start(LoadRequest(source="s3://loads/good/data/", dependencies=("nope",)))
    )
    assert waits.status == "LOAD_FAILED_BECAUSE_DEPENDENCY_NOT_SATISFIED"
    assert (
        loader.status(loader.start(LoadRequest(source="s3://loads/none/"))).status
        == "LOAD_S3_READ_ERROR"
    )
    denied = loader.status(loader.start(LoadRequest(source="s3://no-such-bucket/x/")))
    assert denied.status == "LOAD_S3_ACCESS_DENIED_ERROR"
    with pytest.raises(LoadRefused, match="needs Neptune"):
        loader.start(LoadRequest(source="s3://loads/good/data/", format="opencypher"))


@pytest.fixture
def oxigraph_server(tmp_path):
    binary = shutil.which("oxigraph") or str(Path(sys.executable).parent / "oxigraph")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "serve", "--location", str(tmp_path / "served"), "--bind", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(url, proc=proc)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_served_store_shares_loads_between_loaders(source, oxigraph_server):
    block = OxigraphStore(url=oxigraph_server, credentials=source)
    load_id = OxigraphLoader(block).start(LoadRequest(source="s3://loads/good/data/"))
    other = OxigraphLoader(block)  # e.g. the refresh flow, in another process
    status = other.status(load_id)
    assert status.status == "LOAD_COMPLETED" and status.overall["totalRecords"] == 2
    assert other.verify(LoadRequest(source="x"))["count"] == 2
    failed = other.status(other.start(LoadRequest(source="s3://loads/mixed/data/")))
    assert failed.status == "LOAD_FAILED" and failed.overall["parsingErrors"] == 1
    assert other.verify(LoadRequest(source="x"))["count"] == 2
    with pytest.raises(LoadRefused, match="'csv' here needs Neptune"):
        other.start(LoadRequest(source="s3://loads/good/data/", format="csv"))


# -- property graphs: Gremlin CSV into the local store, counted with gremlinpython ---------------

VERTICES = (
    b"~id,~label,name:String,age:Int\np1,person,Ada,36\np2,person,Ben,41\np3,person,Chen,29\n"
)
EDGES = b"~id,~from,~to,~label,since:Date\ne1,p1,p2,knows,2020-01-01\ne2,p2,p3,knows,2021-06-30\n"


def test_gremlin_csv_loads_and_is_counted_with_gremlin(source, tmp_path):
    s3 = aws_client("s3", source)
    s3.put_object(Bucket="loads", Key="pg/data/edges.csv", Body=EDGES)  # edges sort first
    s3.put_object(Bucket="loads", Key="pg/data/vertices.csv", Body=VERTICES)
    loader = OxigraphLoader(OxigraphStore(path=str(tmp_path / "g"), credentials=source))
    request = LoadRequest(source="s3://loads/pg/data/", format="csv")
    status = loader.status(loader.start(request))
    assert status.status == "LOAD_COMPLETED", status.errors
    assert status.overall["totalRecords"] == 5 and status.overall["totalDuplicates"] == 0
    assert loader.verify(request) | {"query": None} == {
        "what": "vertices and edges in the property graph",
        "query": None,
        "count": 5,
        "vertices": 3,
        "edges": 2,
    }
    graph = loader.property_graph()
    path = graph.g.V().has("~id", "p1").out("knows").out("knows").values("name").to_list()
    assert path == ["Chen"]
    again = loader.status(loader.start(request))
    assert again.overall["totalDuplicates"] == 5 and loader.verify(request)["count"] == 5


def test_bad_gremlin_csv_rows_are_counted_like_neptune(source, tmp_path):
    s3 = aws_client("s3", source)
    s3.put_object(
        Bucket="loads",
        Key="bad/data/v.csv",
        Body=b"~id,~label,age:Int\np1,person,old\np2,person,7,extra\np3,person,3\n",
    )
    s3.put_object(
        Bucket="loads", Key="bad/data/e.csv", Body=b"~id,~from,~to,~label\ne1,p3,p9,knows\n"
    )
    loader = OxigraphLoader(OxigraphStore(path=str(tmp_path / "g"), credentials=source))
    strict = LoadRequest(source="s3://loads/bad/data/", format="csv")
    status = loader.status(loader.start(strict))
    assert status.status == "LOAD_FAILED"
    assert (
        status.overall["parsingErrors"],
        status.overall["datatypeMismatchErrors"],
        status.overall["insertErrors"],
    ) == (1, 1, 1)
    assert {e["errorCode"] for e in status.errors} == {
        "PARSING_ERROR",
        "DATATYPE_MISMATCH",
        "FROM_OR_TO_VERTEX_ARE_MISSING",
    }
    assert loader.verify(strict)["count"] == 0  # nothing inserted
    lenient = LoadRequest(source="s3://loads/bad/data/", format="csv", fail_on_error=False)
    assert loader.status(loader.start(lenient)).status == "LOAD_COMPLETED"
    assert loader.verify(lenient)["vertices"] == 1 and loader.verify(lenient)["edges"] == 0
