"""The layout holds: each top-level folder means what it says, and imports only point down.

Layers, lowest first: AWS adapters and small Prefect helpers → block classes → predictors
→ the inference engine → the pipelines built on it (reasoning, events bridge, online API,
devstack, scenario runs, sorting sessions) → Prefect tasks → flows.
"""

from __future__ import annotations

import ast
import importlib
from collections import defaultdict
from pathlib import Path

from prefect.blocks.core import Block

from tests.support.servers import REPO

RANKS = {
    "infergraph.aws": 0,
    "infergraph.logs": 0,
    "infergraph.blockref": 0,
    "infergraph.local_prefect": 0,
    "infergraph.prefect_server": 0,
    "infergraph.temporary_server": 0,
    "infergraph.quick_exit": 0,
    "infergraph.runs": 0,
    "infergraph.cli_errors": 0,
    "blocks": 1,
    "infergraph.predictors": 2,
    "infergraph.inference": 3,
    "tasks": 5,
    "flows": 6,
}
PIPELINE_RANK = 4  # any other infergraph sub-package
TOPS = ("infergraph", "blocks", "tasks", "flows")


def unit(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "infergraph" else parts[0]


def rank(module_unit: str) -> int:
    return RANKS.get(module_unit, PIPELINE_RANK)


def modules() -> dict[str, Path]:
    found = {}
    for top in TOPS:
        for path in (REPO / top).rglob("*.py"):
            rel = path.relative_to(REPO).with_suffix("")
            found[".".join(rel.parts).removesuffix(".__init__")] = path
    return found


def imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return {n for n in names if n.split(".")[0] in TOPS}


def test_imports_only_point_down() -> None:
    upward = []
    for module, path in modules().items():
        for target in imports(path):
            if rank(unit(target)) > rank(unit(module)):
                upward.append(f"{module} imports {target}")
    assert upward == []


def test_no_import_cycle_between_packages() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in modules().items():
        for target in imports(path):
            if unit(target) != unit(module):
                graph[unit(module)].add(unit(target))
    seen: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> None:
        seen[node] = 1
        for nxt in sorted(graph[node]):
            assert seen.get(nxt) != 1, " → ".join([*path, node, nxt])
            if nxt not in seen:
                visit(nxt, [*path, node])
        seen[node] = 2

    for node in sorted(graph):
        if node not in seen:
            visit(node, [])


def _decorated_or_called(path: Path, name: str) -> bool:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == name:
            return True
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for dec in node.decorator_list:
                target = dec.func if isinstance(dec, ast.Call) else dec
                if getattr(target, "id", None) == name:
                    return True
    return False


def test_every_task_module_defines_tasks_and_every_flow_module_a_flow() -> None:
    task_files = [p for p in (REPO / "tasks").glob("*.py") if p.name != "__init__.py"]
    flow_files = [p for p in (REPO / "flows").glob("*.py") if p.name != "__init__.py"]
    assert task_files and flow_files
    assert [p.name for p in task_files if not _decorated_or_called(p, "task")] == []
    assert [p.name for p in flow_files if not _decorated_or_called(p, "flow")] == []


def test_blocks_hold_block_classes_only() -> None:
    for path in (REPO / "blocks").glob("*.py"):
        tree = ast.parse(path.read_text())
        classes = [n for n in tree.body if isinstance(n, ast.ClassDef)]
        for cls in classes:
            module = importlib.import_module(f"blocks.{path.stem}")
            assert issubclass(getattr(module, cls.name), Block), (
                f"{path.name}: {cls.name} is not a block"
            )
        if path.name != "__init__.py":
            assert classes, f"{path.name} defines no block"


def test_no_library_module_is_over_500_lines() -> None:
    long = {
        str(p.relative_to(REPO)): n
        for p in (REPO / "infergraph").rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 550
    }
    assert long == {}
