"""The Kubernetes runner against kmock's stateful Kubernetes emulator over HTTP.

The official client (configured from a prefect-kubernetes ``KubernetesCredentials``
block) creates the Job; the test then plays the cluster's part, failing the pods, and
checks that the refresh flow records why and says so once.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import kmock
import pytest
from kubernetes import client
from prefect_kubernetes.credentials import KubernetesClusterConfig, KubernetesCredentials

from flows.reasoning import refresh_bulk_loads, schedule_reasoning_job
from infergraph.reasoning.jobs import JobStatus
from infergraph.reasoning.runners import kubernetes as k8s_job
from tests.support.reasoning_env import INPUT, OUTPUT, make_env

pytestmark = pytest.mark.usefixtures("prefect_server")

IMAGES = {
    "init_container_image": "amazon/aws-cli:2.17.0",
    "publisher_container_image": "amazon/aws-cli:2.17.0",
    "rdfox_container_image": "oxfordsemantic/rdfox:7.2",
    "rdfox_init_container_image": "busybox:1.36",
}


class Emulator:
    def __init__(self) -> None:
        self.url = ""
        self.handler: kmock.KubernetesEmulator | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        async with kmock.KubernetesEmulator() as handler, kmock.Server(handler) as server:
            handler.resources["batch/v1/jobs"] = {}
            handler.resources["v1/pods"] = {}
            self.handler, self.url = handler, str(server.url).rstrip("/")
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> Emulator:
        self._thread.start()
        assert self._ready.wait(20), "kmock did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.fixture
def cluster() -> Iterator[tuple[Emulator, KubernetesCredentials]]:
    with Emulator() as emulator:
        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kmock", "cluster": {"server": emulator.url}}],
            "users": [{"name": "tester", "user": {"token": "not-checked"}}],
            "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "tester"}}],
            "current-context": "kmock",
        }
        credentials = KubernetesCredentials(
            cluster_config=KubernetesClusterConfig(config=kubeconfig, context_name="kmock")
        )
        yield emulator, credentials


@pytest.fixture
def env(aws, tmp_path):
    env = make_env(aws, tmp_path)
    for name, body in {
        "chains.dlog": b"[?c, a, :Chain] :- [?t, a, :Transaction] .\n",
        "transactions.nt": b"<http://e/t1> <http://e/type> <http://e/T> .\n",
        "extract1.rq": b"PREFIX e: <http://e/>\nCONSTRUCT { ?s ?p ?o } WHERE { ?s ?p ?o }\n",
        "counts.rq": b"# counts\nSELECT (COUNT(*) AS ?fullChainCount) WHERE { ?s ?p ?o }\n",
    }.items():
        env.s3.put_object(Bucket=INPUT, Key=f"tx/{name}", Body=body)
    return env


def schedule(env, credentials, **extra):
    spec = {"job_bucket": INPUT, "job_key": "tx", "output_bucket": OUTPUT, "runner": "kubernetes"}
    env.put_jobspec("jobs/tx.rdfoxjob.json", {**spec, **IMAGES, **extra})
    return schedule_reasoning_job(
        INPUT,
        "jobs/tx.rdfoxjob.json",
        jobs_table=env.table,
        notices=env.topic,
        aws_credentials=env.credentials,
        kubernetes_credentials=credentials,
    )


def test_schedule_creates_the_reference_job(env, cluster):
    _, credentials = cluster
    result = schedule(
        env, credentials, requested_cores=8, requested_memory="16Gi", auto_shutdown=True
    )
    assert result["status"] == "SCHEDULED", result
    name = k8s_job.job_name(result["job_id"])
    assert result["kubernetes"] == {"name": name, "namespace": "ns-rdfox"}
    job = env.store.get_by_id(result["job_id"], "tx")
    assert job.get("kubernetes") == result["kubernetes"]

    # Read back what the server stored, through the official client.
    with k8s_job.api_client(credentials) as api:
        stored = client.BatchV1Api(api).read_namespaced_job(name, "ns-rdfox").to_dict()
    pod = stored["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["init_containers"]] == ["fetch-dataset", "load-licence"]
    assert [c["name"] for c in pod["containers"]] == ["reasoner", "publisher"]
    reasoner, publisher = pod["containers"]
    assert (
        reasoner["resources"]["requests"]
        == reasoner["resources"]["limits"]
        == {
            "cpu": "8",
            "memory": "16Gi",
        }
    )
    assert pod["security_context"]["run_as_non_root"] is True
    assert pod["security_context"]["run_as_user"] == 1000
    assert pod["service_account_name"] == "rdfox-service-account"
    assert pod["restart_policy"] == "Never"
    mounts = {m["mount_path"]: m.get("read_only") for m in reasoner["volume_mounts"]}
    assert mounts["/data"] is True and mounts["/scripts"] is True and not mounts["/output"]
    for container in pod["init_containers"] + pod["containers"]:
        env_vars = {e["name"]: e.get("value") for e in container["env"]}
        assert env_vars["JOB_ID"] == result["job_id"]
        assert env_vars["AUTO_SHUTDOWN"] == "true"
        assert env_vars["BUCKET_NAME"] == OUTPUT
        assert env_vars["DATA_PATH"] == "/data"
        assert env_vars["NUMBER_OF_CORES"] == "8"
    fetch = pod["init_containers"][0]
    assert f"s3://{INPUT}/tx/ /data/" in fetch["command"][-1]
    script = {e["name"]: e.get("value") for e in fetch["env"]}["REASONER_SCRIPT"]
    assert 'import "/data/chains.dlog"' in script and 'import "/data/transactions.nt"' in script
    assert 'set output "/output/data/extract1.rq.nt"' in script
    assert 'answer "/data/counts.rq"' in script.split("running-counts")[1]
    out = f"s3://{OUTPUT}/tx/{result['job_id']}/"
    command = publisher["command"][-1]
    assert f"{out}data/" in command and command.rstrip().endswith(f"{out}rdfox.log")
    assert pod["volumes"][-1]["secret"]["secret_name"] == "rdfox-license"


def test_job_whose_pods_fail_is_inference_failed(env, cluster):
    _, credentials = cluster
    result = schedule(env, credentials)
    name, job_id = k8s_job.job_name(result["job_id"]), result["job_id"]

    # Still running: the refresh leaves it alone.
    quiet = refresh_bulk_loads(
        jobs_table=env.table,
        notices=env.topic,
        graph_store=env.graph,
        kubernetes_credentials=credentials,
    )
    assert quiet["inference_failed"] == []

    # The cluster's part: the reasoner is OOM-killed and the Job controller gives up.
    with k8s_job.api_client(credentials) as api:
        core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
        core.create_namespaced_pod(
            "ns-rdfox",
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": f"{name}-x7k2p",
                    "namespace": "ns-rdfox",
                    "labels": {"job-name": name},
                },
                "spec": {"containers": [{"name": "reasoner", "image": "rdfox"}]},
                "status": {
                    "phase": "Failed",
                    "containerStatuses": [
                        {
                            "name": "reasoner",
                            "image": "rdfox",
                            "imageID": "",
                            "ready": False,
                            "restartCount": 0,
                            "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}},
                        }
                    ],
                },
            },
        )
        batch.patch_namespaced_job_status(
            name,
            "ns-rdfox",
            {
                "status": {
                    "failed": 1,
                    "conditions": [
                        {
                            "type": "Failed",
                            "status": "True",
                            "reason": "BackoffLimitExceeded",
                            "message": "Job has reached the specified backoff limit",
                        }
                    ],
                }
            },
        )

    refreshed = refresh_bulk_loads(
        jobs_table=env.table,
        notices=env.topic,
        graph_store=env.graph,
        kubernetes_credentials=credentials,
    )
    assert [r["job_id"] for r in refreshed["inference_failed"]] == [job_id]
    job = env.store.get_by_id(job_id, "tx")
    assert job.status == JobStatus.ERROR_NOTIFICATION_SENT
    assert job.get("outcome") == "INFERENCE_FAILED"
    assert "BackoffLimitExceeded" in job.get("reason")
    assert "container reasoner terminated: OOMKilled (exit code 137)" in job.get("reason")
    (notice,) = env.notices()
    assert notice["Subject"] == f"Inference Result Notification for {job_id} - INFERENCE_FAILED"
    assert "OOMKilled" in notice["Message"]

    again = refresh_bulk_loads(
        jobs_table=env.table,
        notices=env.topic,
        graph_store=env.graph,
        kubernetes_credentials=credentials,
    )
    assert again["inference_failed"] == [] and env.notices(wait=0) == []


def test_unreachable_cluster_is_schedule_failed(env):
    credentials = KubernetesCredentials(
        cluster_config=KubernetesClusterConfig(
            config={
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "gone", "cluster": {"server": "http://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "gone", "context": {"cluster": "gone", "user": "u"}}],
                "current-context": "gone",
            },
            context_name="gone",
        )
    )
    result = schedule(env, credentials)
    assert result["status"] == "ERROR_NOTIFICATION_SENT"
    assert "could not start the Kubernetes Job" in result["reason"]
    assert env.store.get_by_id(result["job_id"], "tx").get("outcome") == "SCHEDULE_FAILED"
    assert len(env.notices()) == 1


def test_bad_kubernetes_name_fails_before_the_cluster(env, cluster):
    emulator, credentials = cluster
    result = schedule(env, credentials, namespace="Not_A_Namespace")
    assert result["status"] == "ERROR_NOTIFICATION_SENT"
    assert "namespace: must be a Kubernetes namespace name" in result["reason"]
    assert list(emulator.handler.objects) == []


def test_sparql_update_rules_are_refused_by_the_kubernetes_runner():
    from infergraph.reasoning.jobspec import JobSpec

    fields = {"job_bucket": INPUT, "job_key": "tx", "output_bucket": OUTPUT, **IMAGES}
    spec = JobSpec.model_validate({**fields, "runner": "kubernetes"})
    with pytest.raises(ValueError, match=r"01_chain_start\.ru are not RDFox Datalog"):
        k8s_job.check_rule_formats(["data.nt", "01_chain_start.ru", "q.rq"], spec)
    k8s_job.check_rule_formats(["data.nt", "rules.dlog", "q.rq"], spec)


def _flows(env, credentials, graph=None):
    return {
        "jobs_table": env.table,
        "notices": env.topic,
        "graph_store": graph or env.graph,
        "kubernetes_credentials": credentials,
    }


def _job_exists(credentials, name: str) -> bool:
    with k8s_job.api_client(credentials) as api:
        try:
            client.BatchV1Api(api).read_namespaced_job(name, "ns-rdfox")
        except client.ApiException as exc:
            assert exc.status == 404
            return False
    return True


def test_cancel_deletes_the_kubernetes_job(env, cluster):
    from flows.reasoning import cancel_reasoning_job

    _, credentials = cluster
    result = schedule(env, credentials)
    name = k8s_job.job_name(result["job_id"])
    assert _job_exists(credentials, name)
    flows = _flows(env, credentials)
    flows.pop("graph_store")
    cancelled = cancel_reasoning_job(result["job_id"], **flows)
    assert cancelled["status"] == "ERROR_NOTIFICATION_SENT"
    assert not _job_exists(credentials, name)
    job = env.store.get_by_id(result["job_id"], "tx")
    assert job.get("outcome") == "INFERENCE_FAILED"
    assert job.get("reason") == f"cancelled by user; Kubernetes Job ns-rdfox/{name} deleted"
    assert len(env.notices()) == 1


def test_inference_timeout_fails_and_stops_the_job(env, cluster):
    _, credentials = cluster
    result = schedule(env, credentials, inference_timeout_minutes=0.0001)
    name = k8s_job.job_name(result["job_id"])
    refreshed = refresh_bulk_loads(**_flows(env, credentials))
    assert [t["job_id"] for t in refreshed["timed_out"]] == [result["job_id"]]
    assert not _job_exists(credentials, name)
    job = env.store.get_by_id(result["job_id"], "tx")
    assert job.status == JobStatus.ERROR_NOTIFICATION_SENT
    assert job.get("reason").startswith("inference timeout: still SCHEDULED after 0.0001 min")
    (notice,) = env.notices()
    assert notice["Subject"].endswith(" - INFERENCE_FAILED")


def test_job_that_succeeded_without_a_log_is_detected(env, cluster):
    _, credentials = cluster
    result = schedule(env, credentials)
    name = k8s_job.job_name(result["job_id"])
    with k8s_job.api_client(credentials) as api:
        client.BatchV1Api(api).patch_namespaced_job_status(
            name,
            "ns-rdfox",
            {
                "status": {
                    "succeeded": 1,
                    "conditions": [{"type": "Complete", "status": "True"}],
                }
            },
        )
    graph = env.graph.model_copy(update={"log_grace_minutes": 0.0001})
    first = refresh_bulk_loads(**_flows(env, credentials, graph))
    assert first["inference_failed"] == []  # the grace period starts now
    job = env.store.get_by_id(result["job_id"], "tx")
    assert job.status == JobStatus.SCHEDULED and job.get("kubernetes_succeeded_at")

    second = refresh_bulk_loads(**_flows(env, credentials, graph))
    assert [r["job_id"] for r in second["inference_failed"]] == [result["job_id"]]
    job = env.store.get_by_id(result["job_id"], "tx")
    assert job.get("outcome") == "INFERENCE_FAILED"
    assert "succeeded but no rdfox.log was published" in job.get("reason")
    assert len(env.notices()) == 1
