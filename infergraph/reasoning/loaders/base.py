"""What every graph loader shares: the load request, its status, and the loader interface.

Neptune and the local Oxigraph stand-in both speak Neptune's vocabulary (the 15 loader
statuses and the ``overallStatus`` counters), so the flows and the job records cannot
tell them apart.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from infergraph.reasoning.jobspec import JobSpec
from infergraph.reasoning.loaders.status import L

MAX_ERROR_LOGS = 100
#: The named graph where the local loader keeps its load records; never counted as data.
RECORDS_GRAPH = "urn:infergraph:loader-jobs"


@dataclass(frozen=True)
class LoadRequest:
    """A bulk load, in the terms of Neptune's ``POST /loader`` (NOTES §4)."""

    source: str
    format: str = "ntriples"
    iam_role_arn: str | None = None
    region: str | None = None
    mode: str = "AUTO"
    fail_on_error: bool = True
    parallelism: str = "HIGH"
    update_single_cardinality_properties: bool = False
    queue_request: bool = True
    named_graph: str | None = None
    base_uri: str | None = None
    dependencies: tuple[str, ...] = ()

    def record(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> LoadRequest:
        return cls(**{**data, "dependencies": tuple(data.get("dependencies") or ())})

    def parser_configuration(self) -> dict[str, str]:
        config = {}
        if self.base_uri:
            config["baseUri"] = self.base_uri
        if self.named_graph:
            config["namedGraphUri"] = self.named_graph
        return config


@dataclass
class LoadStatus:
    """A loader's answer to ``GET /loader/{loadId}``."""

    load_id: str
    status: str
    overall: dict[str, Any] = field(default_factory=dict)
    feed_count: list[dict[str, int]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_payload(cls, load_id: str, payload: dict[str, Any]) -> LoadStatus:
        overall = dict(payload.get("overallStatus") or {})
        errors = (payload.get("errors") or {}).get("errorLogs") or []
        return cls(
            load_id=load_id,
            status=str(overall.get("status", L.LOAD_UNEXPECTED_ERROR)),
            overall=overall,
            feed_count=list(payload.get("feedCount") or []),
            errors=list(errors)[:MAX_ERROR_LOGS],
        )

    def payload(self) -> dict[str, Any]:
        return {
            "feedCount": self.feed_count,
            "overallStatus": {**self.overall, "status": self.status},
            "errors": {
                "startIndex": 1 if self.errors else 0,
                "endIndex": len(self.errors),
                "loadId": self.load_id,
                "errorLogs": self.errors,
            },
        }


class LoadRefused(RuntimeError):
    """The loader would not start the load; ``status`` is the terminal loader status it means."""

    def __init__(self, status: str, message: str):
        self.status = status
        super().__init__(message)


class GraphLoader(Protocol):
    kind: str

    def defaults(self) -> tuple[str | None, str | None]: ...
    def start(self, request: LoadRequest) -> str: ...
    def status(self, load_id: str) -> LoadStatus: ...
    def cancel(self, load_id: str) -> None: ...
    def verify(self, request: LoadRequest) -> dict[str, Any] | None: ...


#: The reference's deployment-wide loader settings: the default when neither jobspec nor
#: graph store block says otherwise.
REFERENCE_LOADER_DEFAULTS: dict[str, Any] = {
    "source_format": "turtle",
    "mode": "AUTO",
    "fail_on_error": False,
    "parallelism": "HIGH",
    "update_single_cardinality_properties": True,
    "queue_request": True,
}


def block_loader_defaults(block: Any) -> dict[str, Any]:
    """The loader settings a graph store block configures for every job of its deployment."""
    return {k: getattr(block, k, v) for k, v in REFERENCE_LOADER_DEFAULTS.items()}


def build_load_request(
    spec: JobSpec,
    source: str,
    default_role: str | None = None,
    default_region: str | None = None,
    defaults: dict[str, Any] | None = None,
) -> LoadRequest:
    """The load a jobspec asks for: its ``neptune_configuration`` over the block's defaults."""
    cfg = spec.neptune_configuration
    base = {**REFERENCE_LOADER_DEFAULTS, **(defaults or {})}

    def pick(name: str) -> Any:
        value = getattr(cfg, name)
        return base[name] if value is None else value

    return LoadRequest(
        source=source,
        format=pick("source_format"),
        iam_role_arn=cfg.iam_role or default_role,
        region=cfg.region or default_region,
        mode=pick("mode"),
        fail_on_error=pick("fail_on_error"),
        parallelism=pick("parallelism"),
        update_single_cardinality_properties=pick("update_single_cardinality_properties"),
        queue_request=pick("queue_request"),
        named_graph=cfg.named_graph,
        base_uri=cfg.base_uri,
        dependencies=tuple(cfg.dependencies),
    )


def count_query(request: LoadRequest) -> str:
    if request.format == "nquads":
        return (
            "SELECT (COUNT(*) AS ?n) WHERE { GRAPH ?g { ?s ?p ?o } "
            f"FILTER(?g != <{RECORDS_GRAPH}>) }}"
        )
    if request.named_graph:
        return f"SELECT (COUNT(*) AS ?n) WHERE {{ GRAPH <{request.named_graph}> {{ ?s ?p ?o }} }}"
    return "SELECT (COUNT(*) AS ?n) WHERE { ?s ?p ?o }"


def count_what(request: LoadRequest) -> str:
    if request.format == "nquads":
        return "quads in named graphs"
    return (
        f"triples in graph <{request.named_graph}>"
        if request.named_graph
        else "triples in the default graph"
    )
