"""The reasoner as a Kubernetes Job: manifest, schema validation, creation, outcome.

The manifest follows the reference layout (NOTES §3): an init container copies the
dataset from S3 into ``/data`` and writes the reasoner script into ``/scripts``; a
licence loader puts the licence secret in place; the reasoner runs with requests =
limits as a non-root user and tees its log; a publisher uploads ``/output/data`` and
then the log (last: its arrival starts ``process_inference``). The manifest is checked
against the Kubernetes JSON schema before anything is sent, and sent with the
official ``kubernetes`` client configured from a prefect-kubernetes
``KubernetesCredentials`` block.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from dataclasses import dataclass
from typing import Any

from prefect_kubernetes.credentials import KubernetesCredentials

from infergraph.reasoning.jobspec import JobSpec
from infergraph.reasoning.settings import log_name

KUBERNETES_VERSION = "1.30"
RUN_AS_USER = 1000
DATA, SCRIPTS, OUTPUT, LICENCE, HOME = (
    "/data",
    "/scripts",
    "/output",
    "/license",
    "/home/rdfox/.RDFox",
)
LABEL_VALUE = re.compile(r"[^A-Za-z0-9._-]")
_QUERY_FORM = re.compile(r"\b(SELECT|CONSTRUCT|DESCRIBE|ASK)\b", re.IGNORECASE)
RDF_DATA = (".nt", ".nq", ".ttl", ".trig", ".owl", ".rdf")


class ManifestError(ValueError):
    """The manifest does not satisfy the Kubernetes schema (a bug or a bad jobspec value)."""


@dataclass(frozen=True)
class DatasetFiles:
    """What the reasoner script imports and answers, as file names inside ``/data``."""

    rules: list[str]
    data: list[str]
    exports: list[str]
    counts: list[str]


def job_name(job_id: str) -> str:
    """A DNS-1123 name (≤ 63 chars) for ``job_id``; a hash keeps truncated names unique."""
    base = re.sub(r"[^a-z0-9-]+", "-", f"reasoning-{job_id}".lower()).strip("-")
    if len(base) <= 63:
        return base
    digest = hashlib.sha1(job_id.encode()).hexdigest()[:8]
    return f"{base[:54].rstrip('-')}-{digest}"


def label(value: str) -> str:
    return LABEL_VALUE.sub("-", value)[:63].strip("-._") or "none"


def classify_files(names: list[str], query_texts: dict[str, str], spec: JobSpec) -> DatasetFiles:
    """Split the dataset folder's files into rules, data, export queries and count queries."""
    rules = spec.rules if spec.rules is not None else [n for n in names if n.endswith(".dlog")]
    queries = spec.queries if spec.queries is not None else [n for n in names if n.endswith(".rq")]
    exports, counts = [], []
    for query in queries:
        form = _QUERY_FORM.search(_strip_prologue(query_texts.get(query, "")))
        (counts if form and form.group(1).upper() == "SELECT" else exports).append(query)
    data = [n for n in names if n.lower().endswith(RDF_DATA) or n.lower().endswith(".gz")]
    return DatasetFiles(sorted(rules), sorted(data), sorted(exports), sorted(counts))


def check_rule_formats(names: list[str], spec: JobSpec) -> None:
    """The reasoner imports RDFox Datalog only: SPARQL Update rules must not be skipped silently."""
    rules = spec.rules if spec.rules is not None else [n for n in names if n.endswith(".ru")]
    bad = [name for name in rules if not name.endswith(".dlog")]
    if bad:
        raise ValueError(
            f"rule file(s) {', '.join(bad)} are not RDFox Datalog (*.dlog), which is all the "
            "kubernetes runner imports: convert them, or use runner 'local'"
        )


def _strip_prologue(text: str) -> str:
    lines = [line for line in text.splitlines() if not line.strip().startswith("#")]
    return re.sub(r"(PREFIX|BASE)\s+\S*\s*<[^>]*>", " ", "\n".join(lines), flags=re.IGNORECASE)


def reasoner_script(spec: JobSpec, files: DatasetFiles) -> str:
    """The RDFox shell script; ``@@`` lines are turned into timing lines by :func:`run_script`."""
    q = lambda name: f'"{DATA}/{name}"'  # noqa: E731
    lines = [
        f"dstore create {spec.dataset}",
        f"active {spec.dataset}",
        'set output "out"',
        "begin",
        *[f"import {q(rule)}" for rule in files.rules],
        "import " + " ".join(q(name) for name in files.data),
        "commit",
        "echo @@LOADED",
        "mat",
        "echo @@MATERIALISED",
    ]
    for query in files.exports:
        lines += [
            f'set output "{OUTPUT}/data/{query}.nt"',
            'set query.answer-format "application/n-triples"',
            f"answer {q(query)}",
            'set output "out"',
        ]
    lines += ["echo @@QUERIED", "echo ---info---", "info", "echo ---endinfo---", "echo @@TOTAL"]
    lines.append("echo running-counts")
    lines += ['set query.answer-format "text/csv"', *[f"answer {q(c)}" for c in files.counts]]
    lines.append("echo end-running-counts")
    return "\n".join(lines) + "\n"


def run_script(spec: JobSpec) -> str:
    """Shell wrapper: runs the reasoner, stamps phases as their markers stream out, tees the log."""
    rdfox = (
        f"RDFox -license-file {HOME}/RDFox.lic -role admin sandbox {DATA} "
        f'"exec {SCRIPTS}/reason.rdfox"'
    )
    return f"""set -u
stamp() {{ date -u '+%d-%b-%Y %H:%M:%S'; }}
mkdir -p {OUTPUT}/data
start=$(stamp); phase=$start; inferred=$start
{rdfox} 2>&1 | while IFS= read -r line; do
  case "$line" in
    @@LOADED) now=$(stamp); echo "LOADTIME-$phase|$now"; phase=$now ;;
    @@MATERIALISED) now=$(stamp); echo "INFERENCETIME-$phase|$now"; phase=$now; inferred=$now ;;
    @@QUERIED) now=$(stamp); echo "QUERYTIME-$phase|$now"; phase=$now ;;
    @@TOTAL) echo "TOTALTIME-$start|$inferred" ;;
    *) printf '%s\\n' "$line" ;;
  esac
done | tee {OUTPUT}/rdfox.log
touch {OUTPUT}/DONE
if [ "$AUTO_SHUTDOWN" != "true" ]; then
  exec RDFox -license-file {HOME}/RDFox.lic -port {spec.rdfox_port} daemon
fi
"""


def build_manifest(
    spec: JobSpec, job_id: str, files: DatasetFiles, jobspec_uri: str = ""
) -> dict[str, Any]:
    """The Job manifest for ``job_id`` (a plain dict: validated, then sent as is)."""
    name = job_name(job_id)
    output = spec.output_prefix(job_id)
    labels = {
        "app.kubernetes.io/name": "rdfox-reasoner",
        "app.kubernetes.io/managed-by": "infergraph",
        "infergraph/dataset": label(spec.dataset),
        "infergraph/job-id": label(job_id),
    }
    env = [
        {"name": "JOB_ID", "value": job_id},
        {"name": "AUTO_SHUTDOWN", "value": str(spec.auto_shutdown).lower()},
        {"name": "BUCKET_NAME", "value": spec.output_bucket},
        {"name": "DATA_PATH", "value": DATA},
        {"name": "NUMBER_OF_CORES", "value": str(spec.requested_cores)},
    ]
    container_security = {
        "allowPrivilegeEscalation": False,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    small = {"cpu": "250m", "memory": "256Mi"}
    reasoner_resources = {"cpu": str(spec.requested_cores), "memory": spec.requested_memory}
    reasoner_env = list(env)
    if spec.rdfox_password_secret:
        reasoner_env.append(
            {
                "name": "RDFOX_ROLE_PASSWORD",
                "valueFrom": {
                    "secretKeyRef": {"name": spec.rdfox_password_secret, "key": "password"}
                },
            }
        )
    fetch = (
        f"aws s3 cp --recursive --only-show-errors {shlex.quote(spec.dataset_location)} {DATA}/ && "
        f'printf "%s" "$REASONER_SCRIPT" > {SCRIPTS}/reason.rdfox && '
        f'printf "%s" "$RUN_SCRIPT" > {SCRIPTS}/run.sh'
    )
    publish = (
        f"while [ ! -f {OUTPUT}/DONE ]; do sleep 5; done; "
        f"aws s3 cp --recursive --only-show-errors {OUTPUT}/data/ "
        f"{shlex.quote(output + 'data/')} ; "
        f"aws s3 cp --only-show-errors {OUTPUT}/rdfox.log {shlex.quote(output + log_name())}"
    )
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": spec.namespace,
            "labels": labels,
            "annotations": {"infergraph/job-id": job_id, "infergraph/jobspec": jobspec_uri},
        },
        "spec": {
            "parallelism": spec.parallelism,
            # A reasoning run is long and deterministic: a failed pod is reported, not rerun.
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": spec.service_account,
                    "restartPolicy": spec.restart_policy,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": RUN_AS_USER,
                        "runAsGroup": RUN_AS_USER,
                        "fsGroup": RUN_AS_USER,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "initContainers": [
                        {
                            "name": "fetch-dataset",
                            "image": spec.init_container_image,
                            "command": ["/bin/sh", "-c", fetch],
                            "env": [
                                *env,
                                {"name": "REASONER_SCRIPT", "value": reasoner_script(spec, files)},
                                {"name": "RUN_SCRIPT", "value": run_script(spec)},
                            ],
                            "resources": {"requests": small, "limits": small},
                            "securityContext": container_security,
                            "volumeMounts": [
                                {"name": "data", "mountPath": DATA},
                                {"name": "scripts", "mountPath": SCRIPTS},
                            ],
                        },
                        {
                            "name": "load-licence",
                            "image": spec.rdfox_init_container_image,
                            "command": [
                                "/bin/sh",
                                "-c",
                                f"cp {LICENCE}/RDFox.lic {HOME}/RDFox.lic",
                            ],
                            "env": env,
                            "resources": {"requests": small, "limits": small},
                            "securityContext": container_security,
                            "volumeMounts": [
                                {"name": "licence", "mountPath": LICENCE, "readOnly": True},
                                {"name": "rdfox-home", "mountPath": HOME},
                            ],
                        },
                    ],
                    "containers": [
                        {
                            "name": "reasoner",
                            "image": spec.rdfox_container_image,
                            "command": ["/bin/sh", f"{SCRIPTS}/run.sh"],
                            "env": reasoner_env,
                            "ports": [{"name": "rdfox", "containerPort": spec.rdfox_port}],
                            "resources": {
                                "requests": reasoner_resources,
                                "limits": reasoner_resources,
                            },
                            "securityContext": container_security,
                            "volumeMounts": [
                                {"name": "data", "mountPath": DATA, "readOnly": True},
                                {"name": "scripts", "mountPath": SCRIPTS, "readOnly": True},
                                {"name": "output", "mountPath": OUTPUT},
                                {"name": "rdfox-home", "mountPath": HOME},
                            ],
                        },
                        {
                            "name": "publisher",
                            "image": spec.publisher_container_image,
                            "command": ["/bin/sh", "-c", publish],
                            "env": env,
                            "resources": {"requests": small, "limits": small},
                            "securityContext": container_security,
                            "volumeMounts": [
                                {"name": "output", "mountPath": OUTPUT, "readOnly": True}
                            ],
                        },
                    ],
                    "volumes": [
                        {"name": "data", "emptyDir": {}},
                        {"name": "scripts", "emptyDir": {}},
                        {"name": "output", "emptyDir": {}},
                        {"name": "rdfox-home", "emptyDir": {}},
                        {"name": "licence", "secret": {"secretName": spec.license_secret_name}},
                    ],
                },
            },
        },
    }


def validate_manifest(manifest: dict[str, Any], version: str = KUBERNETES_VERSION) -> None:
    """Strict schema check (unknown fields rejected); :class:`ManifestError` names the path."""
    import kubernetes_validate

    try:
        kubernetes_validate.validate(manifest, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(p) for p in exc.path) or "(root)"
        raise ManifestError(
            f"Job manifest invalid for Kubernetes {exc.version} at {where}: {exc.message}"
        ) from None


def api_client(credentials: KubernetesCredentials | None) -> Any:
    """An official-client ``ApiClient`` from the block's kubeconfig, else in-cluster, else ~/.kube.

    prefect-kubernetes 0.8's own ``get_client`` yields ``kubernetes_asyncio`` clients; the
    flows here are synchronous, so the block's stored kubeconfig feeds the official client.
    """
    from kubernetes import client, config

    if credentials is not None and credentials.cluster_config is not None:
        return config.new_client_from_config_dict(
            credentials.cluster_config.config, context=credentials.cluster_config.context_name
        )
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        config.load_kube_config(client_configuration=configuration)
    return client.ApiClient(configuration)


def create_job(manifest: dict[str, Any], credentials: KubernetesCredentials | None) -> str:
    """Create the Job; a retry that finds its own Job already there counts as created."""
    from kubernetes import client

    meta = manifest["metadata"]
    with api_client(credentials) as api:
        batch = client.BatchV1Api(api)
        try:
            created = batch.create_namespaced_job(meta["namespace"], manifest)
            return created.metadata.name
        except client.ApiException as exc:
            if exc.status != 409:
                raise
            existing = batch.read_namespaced_job(meta["name"], meta["namespace"])
            owner = (existing.metadata.annotations or {}).get("infergraph/job-id")
            if owner != meta["annotations"]["infergraph/job-id"]:
                raise RuntimeError(
                    f"a Job named {meta['name']} already exists in {meta['namespace']} for "
                    f"another job ({owner or 'unknown'})"
                ) from exc
            return existing.metadata.name


@dataclass
class JobOutcome:
    state: str  # running | succeeded | failed
    reason: str = ""


def job_outcome(name: str, namespace: str, credentials: KubernetesCredentials | None) -> JobOutcome:
    """Where the Job stands, and for a failed one, what its pods' containers said."""
    from kubernetes import client

    with api_client(credentials) as api:
        batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
        try:
            job = batch.read_namespaced_job(name, namespace)
        except client.ApiException as exc:
            if exc.status == 404:
                return JobOutcome("failed", f"Kubernetes Job {namespace}/{name} no longer exists")
            raise
        status = job.status or client.V1JobStatus()  # a brand-new Job has none yet
        conditions = {c.type: c for c in (status.conditions or []) if c.status == "True"}
        if "Complete" in conditions or (status.succeeded or 0) > 0:
            return JobOutcome("succeeded")
        failed = conditions.get("Failed")
        if failed is None:
            return JobOutcome("running")
        why = [
            f"Kubernetes Job {namespace}/{name} failed: "
            f"{failed.reason or ''} {failed.message or ''}".strip()
        ]
        pods = core.list_namespaced_pod(namespace, label_selector=f"job-name={name}")
        for pod in pods.items:
            if (pod.metadata.labels or {}).get("job-name") != name:
                continue  # a server that ignores label selectors must not mix in other pods
            statuses = [
                *(pod.status.init_container_statuses or []),
                *(pod.status.container_statuses or []),
            ]
            for container in statuses:
                term = container.state.terminated if container.state else None
                if term is not None and term.exit_code != 0:
                    detail = f"pod {pod.metadata.name}: container {container.name} terminated: "
                    detail += f"{term.reason or 'Error'} (exit code {term.exit_code})"
                    if term.message:
                        detail += f": {term.message.strip()[:300]}"
                    why.append(detail)
        return JobOutcome("failed", "; ".join(why))


def delete_job(name: str, namespace: str, credentials: KubernetesCredentials | None) -> bool:
    """Delete the Job and its pods; False if it was already gone."""
    from kubernetes import client

    with api_client(credentials) as api:
        try:
            client.BatchV1Api(api).delete_namespaced_job(
                name, namespace, propagation_policy="Background"
            )
        except client.ApiException as exc:
            if exc.status == 404:
                return False
            raise
    return True
