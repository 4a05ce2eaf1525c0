"""Class-name files: one label per line, line N naming class N."""

from __future__ import annotations

from pathlib import Path


def read_labels(path: str | Path) -> list[str]:
    return parse_labels(Path(path).read_text(encoding="utf-8"), str(path))


def parse_labels(text: str, source: str = "labels") -> list[str]:
    """Parse a labels file; blank lines at the end are ignored, blank lines inside are not."""
    labels = [line.strip() for line in text.rstrip("\n").splitlines()]
    if not labels or labels == [""]:
        raise ValueError(f"{source}: labels file is empty")
    return labels
