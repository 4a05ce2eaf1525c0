"""A newcomer's mistakes through the real command lines: a short message naming the fix.

Every command runs as a subprocess against the session's Prefect server and moto,
as a user would type it; each must exit non-zero with at most five lines on
stderr (no traceback) that name the fix, and show the traceback with --debug.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.servers import REPO, free_port

MAX_LINES = 5
DEVSTACK_UP = "python -m infergraph.devstack up"


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


@pytest.fixture
def cli(prefect_server, tmp_path) -> Iterator:
    """Run a command as a user would: the session's Prefect API, no AWS variables."""
    from prefect.settings import PREFECT_API_URL

    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PREFECT_"))}
    base.update(
        PREFECT_API_URL=str(PREFECT_API_URL.value()),
        PYTHONPATH=str(REPO),
        INFERGRAPH_HOME=str(tmp_path / "home"),
        # No credentials anywhere in the default chain, and no instance metadata to ask.
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
        AWS_CONFIG_FILE=str(tmp_path / "none"),
        AWS_EC2_METADATA_DISABLED="true",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
    )

    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 240) -> Result:
        done = subprocess.run(
            [sys.executable, *args],
            cwd=tmp_path,
            env={**base, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        return Result(done.returncode, done.stdout, done.stderr)

    return run


def inference(*args: str) -> tuple[str, ...]:
    return (str(REPO / "flows" / "inference.py"), *args)


def assert_short(result: Result, code: int, *fixes: str) -> None:
    """Exit ``code``, at most five stderr lines, no traceback, each of ``fixes`` named."""
    shown = f"exit {result.code}\n{result.stderr}"
    assert result.code == code, shown
    assert len(result.lines) <= MAX_LINES, shown
    assert "Traceback" not in result.stderr, shown
    assert any(line.startswith("error: ") for line in result.lines), shown
    for fix in fixes:
        assert fix in result.stderr, shown


@pytest.fixture
def dead_local_aws(prefect_server) -> str:
    """A saved local-aws block whose emulator is not running (the README's blocks, moto down)."""
    from prefect_aws import AwsCredentials

    endpoint = f"http://127.0.0.1:{free_port()}"
    AwsCredentials(
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
        aws_client_parameters={"endpoint_url": endpoint},
    ).save("local-aws", overwrite=True)
    return endpoint


@pytest.fixture
def live_local_aws(prefect_server, aws) -> str:
    """The local-aws block pointing at a running emulator with a bucket of two digits."""
    from infergraph.aws.clients import aws_client
    from infergraph.predictors.digits import SAMPLES

    aws.save("local-aws", overwrite=True)
    s3 = aws_client("s3", aws)
    s3.create_bucket(Bucket="mistakes")
    for image in sorted(SAMPLES.glob("*.png"))[:2]:
        s3.upload_file(str(image), "mistakes", f"digits/{image.name}")
    return str(aws.aws_client_parameters.endpoint_url)


def test_a_folder_that_does_not_exist(cli):
    result = cli(*inference("no-such-folder/"))
    assert_short(result, 2, "no-such-folder", "give an existing folder")


def test_a_mistyped_predictor_path(cli):
    result = cli(*inference("--predictor", "infergraph.predictors.digits:DigitsPredicter"))
    assert_short(result, 2, "DigitsPredicter", "--predictor package.module:Class")


def test_a_block_name_typo_suggests_the_saved_name(cli):
    from blocks.sqs import SqsQueue

    SqsQueue(queue_url="http://127.0.0.1:1/123456789012/mistakes-requests").save(
        "mistakes-requests", overwrite=True
    )
    result = cli(*inference("sqs://mistakes-requets"))
    assert_short(result, 2, "did you mean 'mistakes-requests'")


def test_blocks_never_set_up_name_the_setup_command(cli):
    result = cli(*inference("sqs://zz-never-saved-queue"))
    assert_short(result, 2, "zz-never-saved-queue", DEVSTACK_UP)


def test_an_s3_prefix_without_credentials(cli, dead_local_aws):
    result = cli(*inference("s3://mistakes/digits/"))
    assert_short(result, 2, "no AWS credentials", "--aws-credentials local-aws", DEVSTACK_UP)


def test_real_aws_variables_are_said_not_silently_used(cli, dead_local_aws):
    keys = {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "x"}
    result = cli(*inference("s3://mistakes-nowhere/digits/"), env=keys)
    assert result.code != 0
    assert "using real AWS" in result.stderr  # said before anything is tried
    assert len(result.lines) <= MAX_LINES and "Traceback" not in result.stderr, result.stderr
    assert DEVSTACK_UP in result.stderr


def test_the_local_emulator_down(cli, dead_local_aws):
    result = cli(*inference("s3://mistakes/digits/", "--aws-credentials", "local-aws"))
    assert_short(result, 1, "local AWS is not running", DEVSTACK_UP)


def test_a_bucket_that_does_not_exist_is_named_not_a_manifest(cli, live_local_aws):
    result = cli(*inference("s3://no-such-bucket/photos/", "--aws-credentials", "local-aws"))
    assert_short(result, 2, "'no-such-bucket' does not exist")
    assert "manifest" not in result.stderr


def test_prefect_api_url_without_a_server(cli):
    dead = {"PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api"}
    result = cli(*inference(), env=dead)
    assert_short(result, 1, "no Prefect server", "prefect config unset PREFECT_API_URL")


def test_other_commands_fail_the_same_way(cli, tmp_path):
    port = free_port()
    result = cli("-m", "infergraph.devstack", "enqueue", "--port", str(port))
    assert_short(result, 1, f"{DEVSTACK_UP} --port {port}")
    missing = str(tmp_path / "missing.yaml")
    result = cli("-m", "infergraph.blockconfig", "apply", missing)
    assert_short(result, 2, "missing.yaml", "aws.example.yaml")
    debug = cli("-m", "infergraph.blockconfig", "apply", missing, "--debug")
    assert debug.code == 2 and "Traceback" in debug.stderr  # the traceback, on request


def test_without_credentials_the_running_local_aws_is_used_and_said(cli, live_local_aws, tmp_path):
    out = tmp_path / "out.jsonl"
    result = cli(*inference("s3://mistakes/digits/", "--sink", str(out)))
    assert result.code == 0, result.stderr
    assert "using --aws-credentials local-aws" in result.stderr
    assert len(out.read_text().splitlines()) == 2
    assert " ERROR " not in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert Path(out).name in result.stdout  # the summary says where results went


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--batch-size", "x"], "--batch-size: expected a positive number or auto, got 'x'"),
        (["--batch-memory-mib", "0"], "argument --batch-memory-mib: expected a positive number"),
        (["--no-such-option"], "unrecognized arguments: --no-such-option"),
    ],
)
def test_a_bad_option_ends_in_two_lines_not_the_usage_block(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from infergraph.inference.cli import main

    with pytest.raises(SystemExit) as exited:
        main(lambda **_: pytest.fail("the flow must not start"), argv)
    assert exited.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and said in lines[0] and lines[0].startswith("error: ")
    assert lines[1].startswith("fix: see ") and lines[1].endswith("--help")
