"""Where the tests find the repository and start their servers (shared with no test module)."""

from __future__ import annotations

from pathlib import Path

from infergraph.devstack.emulator import free_port, start_moto, wait_for_http

REPO = Path(__file__).resolve().parents[2]

__all__ = ["REPO", "free_port", "start_moto", "wait_for_http"]
