"""The scenario CLI's store commands (no flow runs): upload, list, download, mistakes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from infergraph.scenarios.cli import EXAMPLE_MODEL, main
from infergraph.scenarios.store import LocalStore


def no_flow(**kwargs: Any) -> dict[str, Any]:
    raise AssertionError("these commands never run a flow")


def cli(*argv: str) -> int:
    return main(list(argv), no_flow)


def test_upload_base_first_and_refuse_to_overwrite_base(tmp_path: Path, capsys) -> None:
    store = str(tmp_path / "store")
    assert cli("upload", str(EXAMPLE_MODEL), "--store", store) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("base:") and lines[1].startswith("bridge_closed:")
    local = LocalStore(store)
    local.put("bridge_closed/outputs/old.csv", b"stale")
    # A variant is replaced (its old objects go); base is refused without --force.
    assert cli("upload", str(EXAMPLE_MODEL), "bridge_closed", "--store", store) == 0
    assert "bridge_closed/outputs/old.csv" not in local.keys("bridge_closed/")
    assert cli("upload", str(EXAMPLE_MODEL), "base", "--store", store) == 1
    err = capsys.readouterr().err
    assert "read-only: pass --force" in err and "Traceback" not in err
    assert cli("upload", str(EXAMPLE_MODEL), "base", "--store", store, "--force") == 0


def test_list_and_download(tmp_path: Path, capsys) -> None:
    store = LocalStore(tmp_path / "store")
    store.put("base/inputs/params.json", b"{}")
    store.put("base/outputs/summary.csv", b"a\n1\n")
    store.put("base/logs/A.txt", b"log")
    store.put("base/status.json", json.dumps({"state": "FAILED", "step": "A"}).encode())
    store.put("variant/inputs/params.json", b"{}")
    assert cli("list", "--store", str(store.root)) == 0
    out = capsys.readouterr().out
    assert "base" in out and "FAILED" in out and "never run" in out
    dest = tmp_path / "down"
    assert cli("download", "base", str(dest), "--store", str(store.root)) == 0
    assert (dest / "outputs/summary.csv").read_text() == "a\n1\n"
    assert (dest / "logs/A.txt").is_file() and not (dest / "inputs").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["download", "nope", "x", "--store", "{store}"], "scenario 'nope' does not exist"),
        (["upload", "{tmp}/missing", "--store", "{store}"], "does not exist"),
        (["list", "--store", "ftp://host/x"], "use s3://<bucket>[/prefix] or a local folder"),
    ],
)
def test_mistakes_end_in_one_line(tmp_path: Path, capsys, argv: list[str], message: str) -> None:
    argv = [a.format(store=tmp_path / "store", tmp=tmp_path) for a in argv]
    assert cli(*argv) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) <= 2
