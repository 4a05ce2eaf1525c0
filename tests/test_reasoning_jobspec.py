"""Reference jobspecs run unchanged: their fields are read, mapped or recorded, never refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infergraph.reasoning.jobspec import JobSpecError, parse_jobspec

REFERENCE = Path(__file__).parent / "fixtures" / "reasoning" / "reference.rdfoxjob.json"
URI = "s3://jobs/reference.rdfoxjob.json"


def reference() -> dict:
    return json.loads(REFERENCE.read_text())


def test_reference_jobspec_is_accepted_with_every_field_read():
    spec = parse_jobspec(REFERENCE.read_bytes(), URI)
    assert (spec.requested_cores, spec.rdfox_port, spec.parallelism) == (4, 12110, 1)
    assert spec.auto_shutdown is False and spec.restart_policy == "Never"
    assert (spec.job_id, spec.data_path, spec.thread_count) == (
        "transactions_2021-07-30_000",
        "/data",
        8,
    )
    assert spec.reference_counts == {"number_of_cores": 4, "number_of_facts": 510506725}
    cfg = spec.neptune_configuration
    assert (cfg.source_format, cfg.mode, cfg.parallelism) == ("turtle", "AUTO", "OVERSUBSCRIBE")
    assert (cfg.fail_on_error, cfg.update_single_cardinality_properties, cfg.queue_request) == (
        False,
        True,
        True,
    )
    assert cfg.source == "s3://reasoning-output/transactions/"
    assert spec.warnings() == [
        "job_id: 'transactions_2021-07-30_000' recorded only, infergraph assigns the job id"
    ]
    # What the job stores reads back as the same jobspec.
    again = parse_jobspec(json.dumps(spec.model_dump(mode="json")), URI)
    assert again == spec


def test_number_of_cores_sets_the_cores_when_requested_cores_is_absent():
    body = reference()
    del body["requested_cores"]
    body["number_of_cores"] = 16
    assert parse_jobspec(json.dumps(body), URI).requested_cores == 16


def test_reference_and_unknown_keys_mixed_are_warnings_with_suggestions():
    body = reference()
    body["nameSpace"] = "ns-other"
    body["outputBucket"] = "x"
    body["neptune_configuration"]["failOnError"] = "true"
    body["neptune_configuration"]["colour"] = "blue"
    spec = parse_jobspec(json.dumps(body), URI)
    warnings = spec.warnings()
    assert "nameSpace: unknown key, ignored (did you mean 'namespace'?)" in warnings
    assert "outputBucket: unknown key, ignored (did you mean 'output_bucket'?)" in warnings
    assert (
        "neptune_configuration.failOnError: unknown key, ignored (did you mean 'fail_on_error'?)"
        in warnings
    )
    assert "neptune_configuration.colour: unknown key, ignored" in warnings
    assert spec.namespace == "ns-rdfox"  # an unknown key never changes a known one


def test_real_problems_are_still_refused_all_listed():
    body = reference()
    body.pop("job_key")
    body["job_bucket"] = "Not A Bucket"
    body["requested_cores"] = "-2"
    body["auto_shutdown"] = "maybe"
    body["neptune_configuration"]["mode"] = "NeptuneMode.SOMETIMES"
    with pytest.raises(JobSpecError) as exc:
        parse_jobspec(json.dumps(body), URI)
    problems = exc.value.problems
    assert any(p.startswith("job_key: required field is missing") for p in problems)
    assert any(p.startswith("job_bucket: must be an S3 bucket name") for p in problems)
    assert any(p.startswith("requested_cores: Input should be greater than") for p in problems)
    assert any(p.startswith("auto_shutdown: Input should be a valid boolean") for p in problems)
    assert any(p.startswith("neptune_configuration.mode: Input should be") for p in problems)
    assert URI in str(exc.value)


@pytest.mark.usefixtures("prefect_server")
def test_upload_command_checks_then_uploads(aws, tmp_path, capsys):
    from infergraph.aws.clients import aws_client
    from infergraph.reasoning.cli import main

    s3 = aws_client("s3", aws)
    s3.create_bucket(Bucket="reasoning-input")
    aws.save("h13-upload-aws", overwrite=True)
    good = tmp_path / "t.rdfoxjob.json"
    good.write_text(json.dumps({**reference(), "nameSpace": "x"}))
    argv = ["--aws-credentials", "h13-upload-aws", "upload"]
    assert main(None, None, None, None, argv=[*argv, str(good), "s3://reasoning-input/jobs/"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "s3://reasoning-input/jobs/t.rdfoxjob.json"
    assert any("nameSpace: unknown key" in line for line in out)
    body = s3.get_object(Bucket="reasoning-input", Key="jobs/t.rdfoxjob.json")["Body"].read()
    assert body == good.read_bytes()

    bad = tmp_path / "b.rdfoxjob.json"
    bad.write_text(json.dumps({"job_key": "ds", "output_bucket": "Bad Bucket"}))
    assert main(None, None, None, None, argv=[*argv, str(bad), "s3://reasoning-input/jobs/"]) == 1
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith("not uploaded: invalid jobspec") and "output_bucket" in line
    listed = s3.list_objects_v2(Bucket="reasoning-input", Prefix="jobs/b")
    assert listed.get("KeyCount", 0) == 0
