"""``scheme://target?option=value`` strings that name a source or a sink.

A flow's ``source`` and ``sinks`` are plain strings so that a deployment form,
a CLI and a schedule can all carry them; per-source and per-sink settings ride
along as query options (``s3://bucket/out/?gzip=true&columns=a,b``). Unknown
options are rejected with the list of known ones, so a typo never silently
falls back to a default.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

TRUE = frozenset({"1", "true", "yes", "on", ""})
FALSE = frozenset({"0", "false", "no", "off"})


class SpecError(ValueError):
    """A source or sink string that cannot be used; the message names the string."""


@dataclass(frozen=True)
class Spec:
    """A parsed ``scheme://target?options`` string."""

    text: str
    scheme: str
    target: str
    options: dict[str, str] = field(default_factory=dict)

    @property
    def head(self) -> str:
        """The spec without its options (for messages and descriptions)."""
        return self.text.split("?", 1)[0]

    def error(self, message: str) -> SpecError:
        return SpecError(f"{self.head!r}: {message}")

    def string(self, name: str, default: str | None = None) -> str | None:
        return self.options.get(name, default)

    def strings(self, name: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        """A comma-separated option as a tuple, blanks dropped."""
        if name not in self.options:
            return default
        return tuple(p.strip() for p in self.options[name].split(",") if p.strip())

    def boolean(self, name: str, default: bool = False) -> bool:
        if name not in self.options:
            return default
        value = self.options[name].strip().lower()
        if value in TRUE:
            return True
        if value in FALSE:
            return False
        raise self.error(f"option {name}={self.options[name]!r} is not true/false")

    def integer(self, name: str, default: int | None = None, minimum: int = 0) -> int | None:
        if name not in self.options:
            return default
        try:
            value = int(self.options[name])
        except ValueError:
            raise self.error(
                f"option {name}={self.options[name]!r} is not a whole number"
            ) from None
        if value < minimum:
            raise self.error(f"option {name}={value} must be at least {minimum}")
        return value


def parse_spec(text: str, kind: str, options: Mapping[str, str]) -> Spec:
    """Split ``text``; ``options`` maps each allowed option to a short description.

    ``kind`` ("source", "sink") only words the error messages.
    """
    parts = urlsplit(text)
    if not parts.scheme or "://" not in text:
        raise SpecError(f"{kind} {text!r}: expected scheme://target")
    if parts.fragment:
        raise SpecError(f"{kind} {text!r}: '#' is not allowed in a {kind} string")
    target = parts.netloc + parts.path
    parsed: dict[str, str] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name not in options:
            known = ", ".join(f"{k} ({v})" for k, v in options.items()) or "none"
            raise SpecError(f"{kind} {text!r}: unknown option {name!r}; known options: {known}")
        if name in parsed:
            raise SpecError(f"{kind} {text!r}: option {name!r} given twice")
        parsed[name] = value
    return Spec(text=text, scheme=parts.scheme, target=target, options=parsed)
