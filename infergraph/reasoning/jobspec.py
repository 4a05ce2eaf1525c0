"""The reasoning jobspec (``*.rdfoxjob.json``): every field of the reference, validated strictly.

A jobspec is written by hand and uploaded to S3, so a typo must come back as a
message that names the field and the file, never as a stack trace or a silently
ignored key.
"""

from __future__ import annotations

import difflib
import json
import re
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

#: Dataset names become S3 path segments, DynamoDB keys and Kubernetes label values.
DATASET_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|Pi|Ei|M|G|T|P|E)?$"

PATTERN_HELP = {
    "job_key": "must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit",
    "requested_memory": "must be a Kubernetes quantity such as '2Gi' or '512Mi'",
    "namespace": "must be a Kubernetes namespace name (lowercase letters, digits, '-')",
    "service_account": "must be a Kubernetes name (lowercase letters, digits, '-', '.')",
    "license_secret_name": "must be a Kubernetes name (lowercase letters, digits, '-', '.')",
    "rdfox_password_secret": "must be a Kubernetes name (lowercase letters, digits, '-', '.')",
}

Dataset = Annotated[str, Field(pattern=DATASET_PATTERN)]
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


class _Strict(BaseModel):
    # strict: a JSON string "yes" is not a boolean and "4" is not a number of cores.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class NeptuneConfiguration(_Strict):
    """How the reasoner's output is bulk-loaded (Neptune ``POST /loader`` fields, snake_case)."""

    cluster_endpoint: str | None = Field(
        default=None,
        description="Must match the deployment's Neptune block when given "
        "(a jobspec may not redirect loads).",
    )
    source_format: LoaderFormat = "ntriples"
    iam_role: str | None = Field(default=None, description="iamRoleArn; default: the block's.")
    region: str | None = Field(default=None, description="Region of the source bucket.")
    mode: Literal["NEW", "RESUME", "AUTO"] = "AUTO"
    fail_on_error: bool = True
    parallelism: Literal["LOW", "MEDIUM", "HIGH", "OVERSUBSCRIBE"] = "HIGH"
    update_single_cardinality_properties: bool = False
    # Several jobs often finish together; without queueing Neptune rejects all but one load.
    queue_request: bool = True
    named_graph: str | None = Field(default=None, description="parserConfiguration.namedGraphUri")
    base_uri: str | None = Field(default=None, description="parserConfiguration.baseUri")
    dependencies: list[str] = Field(default_factory=list, description="Load ids to wait for.")


class JobSpec(_Strict):
    """One reasoning job: where the dataset is, how to reason over it, where results go."""

    job_bucket: str | None = Field(default=None, description="Bucket holding the dataset folder.")
    job_key: Dataset = Field(
        description="The dataset name: the folder s3://{job_bucket}/{job_key}/."
    )
    output_bucket: str = Field(
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
    auto_shutdown: bool = False
    namespace: DnsLabel = "ns-rdfox"
    service_account: DnsName = "rdfox-service-account"
    rdfox_port: int = Field(default=12110, ge=1, le=65535)
    rdfox_password_secret: DnsName | None = None
    restart_policy: Literal["Never", "OnFailure"] = "Never"
    parallelism: int = Field(default=1, ge=1)
    neptune_configuration: NeptuneConfiguration = Field(default_factory=NeptuneConfiguration)
    accept_empty_results: bool = Field(
        default=False,
        description="Let a job whose exports are empty succeed (default: INFERENCE_FAILED, "
        "since an empty result usually means rules that did not run).",
    )

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
    if kind == "extra_forbidden":
        return f"{where}: unknown key" + _suggestion(err["loc"])
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


def _suggestion(loc: tuple[Any, ...]) -> str:
    model: type[BaseModel] = JobSpec
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return ""
        model = annotation
    known = list(model.model_fields)
    wanted = re.sub(r"(?<!^)(?=[A-Z])", "_", str(loc[-1])).lower()  # failOnError → fail_on_error
    close = difflib.get_close_matches(wanted, known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
