"""Read the reasoner's log (``rdfox.log``) into timings, fact counts and named counts.

The format is RDFox shell output plus the ``LOADTIME-…|…`` style lines the job
script echoes. Logs come from pods that may have died part-way, from Windows
editors (CRLF) and from the local runner, so every value is optional: what is not
in the log is absent from the result, never zero.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

TIME_FORMAT = "%d-%b-%Y %H:%M:%S"
PHASES = {
    "LOADTIME": "load",
    "INFERENCETIME": "inference",
    "QUERYTIME": "query",
    "TOTALTIME": "total",
}

_PHASE = re.compile(r"^(LOADTIME|INFERENCETIME|QUERYTIME|TOTALTIME)-(.+?)\s*\|\s*(.+?)\s*$")
_INFO = re.compile(r"^\s*(?P<name>[A-Za-z][A-Za-z ()%]*?)\s*:\s+(?P<value>[0-9][0-9,.e+]*)")
_MATERIALIZATION = re.compile(r"^Materiali[sz]ation time:\s*([0-9.e+]+)\s*s")
_TUPLES = re.compile(r"^Number of returned tuples:\s*([0-9]+)")
_ANSWERING = re.compile(r"^Answering query from file:\s*(.+?)\s*$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NUMBER = re.compile(r"^-?[0-9]+$")

INFO_FIELDS = {
    "Aggregate number of EDB facts": "edb_facts",
    "Aggregate number of IDB facts": "idb_facts",
    "Aggregate number of entries": "entries",
    "Aggregate size": "aggregate_bytes",
    "Bytes per entry": "bytes_per_entry",
}


class LogParseError(ValueError):
    """The log holds none of the lines a reasoner run writes."""


@dataclass
class ReasonerStats:
    """What a reasoner run reported; None means the log did not say."""

    load_seconds: int | None = None
    inference_seconds: int | None = None
    query_seconds: int | None = None
    total_seconds: int | None = None
    phase_times: dict[str, dict[str, str]] = field(default_factory=dict)
    materialization_seconds: float | None = None
    edb_facts: int | None = None
    idb_facts: int | None = None
    entries: int | None = None
    aggregate_bytes: int | None = None
    bytes_per_entry: float | None = None
    exported: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def as_record(self) -> dict[str, Any]:
        """Only what was found: absent values stay absent in DynamoDB too."""
        return {k: v for k, v in asdict(self).items() if v not in (None, {}, [])}

    @property
    def found_anything(self) -> bool:
        data = self.as_record()
        data.pop("problems", None)
        return bool(data)


def parse_rdfox_log(text: str | bytes, where: str = "rdfox.log") -> ReasonerStats:
    """Parse a reasoner log; :class:`LogParseError` if it has none of the expected lines."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    lines = [line.strip() for line in text.lstrip("\ufeff").splitlines()]
    stats = ReasonerStats()
    query: str | None = None
    for i, line in enumerate(lines):
        if m := _PHASE.match(line):
            _phase(stats, PHASES[m.group(1)], m.group(2), m.group(3))
        elif m := _MATERIALIZATION.match(line):
            stats.materialization_seconds = float(m.group(1))
        elif m := _ANSWERING.match(line):
            query = m.group(1)
        elif m := _TUPLES.match(line):
            if query is not None:
                stats.exported[query.rsplit("/", 1)[-1]] = int(m.group(1))
                query = None
        elif m := _INFO.match(line):
            name = INFO_FIELDS.get(m.group("name").strip())
            if name:
                raw = m.group("value").replace(",", "")
                setattr(stats, name, float(raw) if name == "bytes_per_entry" else int(float(raw)))
        elif _NAME.match(line) and i + 1 < len(lines) and _NUMBER.match(lines[i + 1]):
            # Counts are printed as a name line, then a number line.
            stats.counts[line] = int(lines[i + 1])
    if not stats.found_anything:
        first = next((line for line in lines if line), "")
        shown = f"first line: {first[:120]!r}" if first else "it is empty"
        raise LogParseError(
            f"{where} has none of the reasoner's lines (LOADTIME/INFERENCETIME/QUERYTIME/"
            f"TOTALTIME, fact counts, named counts): the reasoner probably did not run; {shown}"
        )
    return stats


def _phase(stats: ReasonerStats, phase: str, start: str, end: str) -> None:
    stats.phase_times[phase] = {"start": start, "end": end}
    try:
        seconds = (
            datetime.strptime(end, TIME_FORMAT) - datetime.strptime(start, TIME_FORMAT)
        ).total_seconds()
    except ValueError:
        stats.problems.append(f"{phase} time line has unreadable times {start!r} | {end!r}")
        return
    setattr(stats, f"{phase}_seconds", int(seconds))


def human_duration(seconds: float | None) -> str:
    """``4355`` → ``1 h 12 min 35 s``; None → ``unknown``."""
    if seconds is None:
        return "unknown"
    if seconds < 10 and seconds != int(seconds):
        return f"{seconds:.2f} s"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours} h"] if hours else []
    if minutes or hours:
        parts.append(f"{minutes} min")
    parts.append(f"{secs} s")
    return " ".join(parts)
