"""The reasoning jobspec (``*.rdfoxjob.json``): every field of the reference, read as its users
wrote it.

A reference jobspec must run unchanged: its extra fields (``job_id``, ``data_path``,
``number_of_*``, ``thread_count``, ``neptune_configuration.source``) are accepted and
recorded, enum reprs (``"NeptuneMode.AUTO"``) and numbers or booleans written as strings
are read. A key nobody knows is a warning on the job (with "did you mean"), not a
refusal; a value that is wrong (a bad bucket name, a negative core count) still refuses
the jobspec, naming every bad field and the file.
"""

from __future__ import annotations

import difflib
import json
import re
from typing import Annotated, Any, Literal, Self, get_args, get_origin

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

#: Dataset names become S3 path segments, DynamoDB keys and Kubernetes label values.
DATASET_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
BUCKET_PATTERN = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|Pi|Ei|M|G|T|P|E)?$"

PATTERN_HELP = {
    "job_bucket": "must be an S3 bucket name (3-63 lowercase letters, digits, '.', '-')",
    "output_bucket": "must be an S3 bucket name (3-63 lowercase letters, digits, '.', '-')",
    "job_key": "must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit",
    "requested_memory": "must be a Kubernetes quantity such as '2Gi' or '512Mi'",
    "namespace": "must be a Kubernetes namespace name (lowercase letters, digits, '-')",
    "service_account": "must be a Kubernetes name (lowercase letters, digits, '-', '.')",
    "license_secret_name": "must be a Kubernetes name (lowercase letters, digits, '-', '.')",
    "rdfox_password_secret": "must be a Kubernetes name (lowercase letters, digits, '-', '.')",
}

Dataset = Annotated[str, Field(pattern=DATASET_PATTERN)]
Bucket = Annotated[str, Field(pattern=BUCKET_PATTERN)]
# Kubernetes names, checked here so a typo is a jobspec error rather than an API 422.
DnsLabel = Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)]
DnsName = Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", max_length=253)]
LoaderFormat = Literal["csv", "opencypher", "ntriples", "nquads", "rdfxml", "turtle"]
RDF_FORMATS = frozenset({"ntriples", "nquads", "rdfxml", "turtle"})


class JobSpecError(ValueError):
    """A jobspec that cannot be run; ``problems`` each name a field."""

    def __init__(self, uri: str, problems: list[str]):
        self.uri = uri
        self.problems = problems
        super().__init__(f"invalid jobspec {uri}: " + "; ".join(problems))


def _flag(value: Any) -> Any:
    """JSON booleans, or the strings "true"/"false" the reference's templates wrote."""
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return value


#: A boolean that is not fooled by "yes" or 1: only true/false, as JSON or as a string.
Flag = Annotated[bool, BeforeValidator(_flag), Field(strict=True)]


class _Spec(BaseModel):
    # Lax numbers ("4" is 4 cores), extra keys kept (and warned about) rather than refused.
    model_config = ConfigDict(extra="allow", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _enum_values(cls, data: Any) -> Any:
        """``"NeptuneMode.AUTO"`` → ``"AUTO"``, ``"never"`` → ``"Never"`` for choice fields."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for name, info in cls.model_fields.items():
            choices = _choices(info.annotation)
            value = data.get(name)
            if not choices or not isinstance(value, str):
                continue
            bare = value.strip().rsplit(".", 1)[-1] if "." in value else value.strip()
            match = [c for c in choices if c.lower() == bare.lower()]
            if match:
                data[name] = match[0]
        return data

    def unknown_keys(self, where: str = "") -> list[str]:
        """Keys no model field takes, each with a "did you mean" when one is close."""
        found = []
        for key in self.model_extra or {}:
            found.append(f"{where}{key}: unknown key, ignored" + _suggestion(type(self), key))
        return found


def _choices(annotation: Any) -> tuple[str, ...]:
    if get_origin(annotation) is Literal:
        return tuple(str(a) for a in get_args(annotation))
    # Optional choices: the Literal inside ``X | None``.
    return tuple(c for arg in get_args(annotation) for c in _choices(arg))


class NeptuneConfiguration(_Spec):
    """How the reasoner's output is bulk-loaded (Neptune ``POST /loader`` fields, snake_case)."""

    cluster_endpoint: str | None = Field(
        default=None,
        description="Must match the deployment's Neptune block when given "
        "(a jobspec may not redirect loads).",
    )
    # None: the graph store block's deployment-wide default (the reference's defaults).
    source_format: LoaderFormat | None = None
    iam_role: str | None = Field(default=None, description="iamRoleArn; default: the block's.")
    region: str | None = Field(default=None, description="Region of the source bucket.")
    mode: Literal["NEW", "RESUME", "AUTO"] | None = None
    fail_on_error: Flag | None = None
    parallelism: Literal["LOW", "MEDIUM", "HIGH", "OVERSUBSCRIBE"] | None = None
    update_single_cardinality_properties: Flag | None = None
    queue_request: Flag | None = None
    named_graph: str | None = Field(default=None, description="parserConfiguration.namedGraphUri")
    base_uri: str | None = Field(default=None, description="parserConfiguration.baseUri")
    dependencies: list[str] = Field(default_factory=list, description="Load ids to wait for.")
    source: str | None = Field(
        default=None,
        description="Reference field, recorded only: loads always read the job's own output "
        "prefix s3://{output_bucket}/{dataset}/{job_id}/data/.",
    )


class JobSpec(_Spec):
    """One reasoning job: where the dataset is, how to reason over it, where results go."""

    job_bucket: Bucket | None = Field(
        default=None, description="Bucket holding the dataset folder."
    )
    job_key: Dataset = Field(
        description="The dataset name: the folder s3://{job_bucket}/{job_key}/."
    )
    output_bucket: Bucket = Field(
        description="Bucket receiving {dataset}/{job_id}/data/ and rdfox.log."
    )
    dataset_uri: str | None = Field(
        default=None,
        description="Where the dataset's files are, overriding s3://{job_bucket}/{job_key}/ "
        "(a local folder works with the local runner).",
    )
    runner: Literal["kubernetes", "local"] = "local"
    rules: list[str] | None = Field(
        default=None,
        description="Rule files (relative to the dataset folder, or absolute/s3://); default: "
        "every *.ru (local) or *.dlog (kubernetes) file of the dataset.",
    )
    queries: list[str] | None = Field(
        default=None,
        description="Query files; CONSTRUCT queries export N-Triples, SELECT queries print named "
        "counts; default: every *.rq file of the dataset.",
    )
    requested_cores: int = Field(default=4, ge=1, le=512)
    requested_memory: Annotated[str, Field(pattern=QUANTITY_PATTERN)] = "2Gi"
    init_container_image: str | None = None
    publisher_container_image: str | None = None
    rdfox_container_image: str | None = None
    rdfox_init_container_image: str | None = None
    license_secret_name: DnsName = "rdfox-license"
    auto_shutdown: Flag = False
    namespace: DnsLabel = "ns-rdfox"
    service_account: DnsName = "rdfox-service-account"
    rdfox_port: int = Field(default=12110, ge=1, le=65535)
    rdfox_password_secret: DnsName | None = None
    restart_policy: Literal["Never", "OnFailure"] = "Never"
    parallelism: int = Field(default=1, ge=1)
    neptune_configuration: NeptuneConfiguration = Field(default_factory=NeptuneConfiguration)
    inference_timeout_minutes: float | None = Field(
        default=None, gt=0, description="Limit on SCHEDULED; default: the graph store block's."
    )
    load_timeout_minutes: float | None = Field(
        default=None, gt=0, description="Limit on the bulk load; default: the graph store block's."
    )
    accept_empty_results: Flag = Field(
        default=False,
        description="Let a job whose exports are empty succeed (default: INFERENCE_FAILED, "
        "since an empty result usually means rules that did not run).",
    )

    # The reference's own fields, recorded on the job (infergraph assigns ids and mounts).
    job_id: str | None = Field(
        default=None, description="Reference field, recorded only: infergraph assigns job ids."
    )
    data_path: str | None = Field(
        default=None, description="Reference field, recorded only: the dataset mounts at /data."
    )
    thread_count: int | None = Field(
        default=None, ge=1, description="Reference field, recorded only (reasoner threads)."
    )
    reference_counts: dict[str, int] = Field(
        default_factory=dict,
        description="The reference's number_of_* fields; number_of_cores sets requested_cores "
        "when that is not given.",
    )

    @model_validator(mode="before")
    @classmethod
    def _reference_fields(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        counts = dict(data.get("reference_counts") or {})
        for key in [k for k in data if isinstance(k, str) and k.startswith("number_of_")]:
            counts[key] = data.pop(key)
        if counts:
            data["reference_counts"] = counts
            if "number_of_cores" in counts and "requested_cores" not in data:
                data["requested_cores"] = counts["number_of_cores"]
        return data

    def warnings(self) -> list[str]:
        """What the job should say about its jobspec: unknown keys, ignored reference values."""
        found = self.unknown_keys() + self.neptune_configuration.unknown_keys(
            "neptune_configuration."
        )
        if self.job_id:
            found.append(f"job_id: {self.job_id!r} recorded only, infergraph assigns the job id")
        cores = self.reference_counts.get("number_of_cores")
        if cores is not None and cores != self.requested_cores:
            found.append(
                f"number_of_cores ({cores}) differs from requested_cores "
                f"({self.requested_cores}): requested_cores is used"
            )
        return found

    @model_validator(mode="after")
    def _runner_needs(self) -> Self:
        if not self.job_bucket and not self.dataset_uri:
            raise ValueError("job_bucket: required unless dataset_uri is given")
        if self.runner == "kubernetes":
            missing = [
                name
                for name in (
                    "init_container_image",
                    "publisher_container_image",
                    "rdfox_container_image",
                    "rdfox_init_container_image",
                )
                if not getattr(self, name)
            ]
            if missing:
                raise ValueError(f"{', '.join(missing)}: required when runner is 'kubernetes'")
            if not self.dataset_location.startswith("s3://"):
                raise ValueError(
                    "dataset_uri: the kubernetes runner reads datasets from s3:// only"
                )
        return self

    @property
    def dataset(self) -> str:
        return self.job_key

    @property
    def dataset_location(self) -> str:
        """The dataset folder as an ``s3://`` prefix or a local path, ending in ``/``."""
        location = self.dataset_uri or f"s3://{self.job_bucket}/{self.job_key}/"
        return location if location.endswith("/") else location + "/"

    def output_prefix(self, job_id: str) -> str:
        return f"s3://{self.output_bucket}/{self.job_key}/{job_id}/"


def parse_jobspec(data: bytes | str, uri: str) -> JobSpec:
    """The validated jobspec, or :class:`JobSpecError` naming each bad field and ``uri``."""
    text = _decode(data, uri)
    try:
        return JobSpec.model_validate_json(text)
    except ValidationError as exc:
        raise JobSpecError(uri, [_describe(err) for err in exc.errors()]) from None


def dataset_of(data: bytes | str) -> str | None:
    """The dataset a broken jobspec was meant for, if it names a usable one (to key its record)."""
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    key = raw.get("job_key") if isinstance(raw, dict) else None
    return key if isinstance(key, str) and re.match(DATASET_PATTERN, key) else None


def _decode(data: bytes | str, uri: str) -> str:
    try:
        text = data.decode("utf-8-sig") if isinstance(data, bytes) else data
    except UnicodeDecodeError as exc:
        raise JobSpecError(uri, [f"not UTF-8 text (byte {exc.start})"]) from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise JobSpecError(
            uri, [f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"]
        ) from None
    if not isinstance(raw, dict):
        raise JobSpecError(uri, [f"must be a JSON object, got {type(raw).__name__}"])
    return text


def _describe(err: Any) -> str:
    where = ".".join(str(part) for part in err["loc"])
    kind = err["type"]
    if kind == "missing":
        return f"{where}: required field is missing"
    if kind == "string_pattern_mismatch":
        return (
            f"{where}: {PATTERN_HELP.get(str(err['loc'][-1]), err['msg'])} (got {err['input']!r})"
        )
    if kind == "value_error":
        # Our own cross-field checks already start with the field name.
        return str(err["ctx"]["error"])
    got = err.get("input")
    shown = json.dumps(got)[:60] if not isinstance(got, dict) else "an object"
    return f"{where}: {err['msg']} (got {shown})" if where else err["msg"]


def _suggestion(model: type[BaseModel], key: str) -> str:
    known = list(model.model_fields)
    wanted = re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()  # failOnError → fail_on_error
    close = difflib.get_close_matches(wanted, known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
