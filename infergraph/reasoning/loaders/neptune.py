"""Neptune's bulk loader through boto3's ``neptunedata`` client (SigV4 from the block)."""

from __future__ import annotations

from typing import Any

import httpx
from botocore.exceptions import ClientError

from blocks.neptune import NeptuneCluster
from infergraph.aws.errors import is_transient
from infergraph.reasoning.loaders.base import (
    MAX_ERROR_LOGS,
    LoadRefused,
    LoadRequest,
    LoadStatus,
    count_query,
    count_what,
)
from infergraph.reasoning.loaders.status import L

#: Loader error codes that mean "the request itself is wrong" vs "S3 said no".
_REFUSAL_STATUS = {
    "LoadUrlAccessDeniedException": "LOAD_S3_ACCESS_DENIED_ERROR",
    "S3Exception": "LOAD_S3_READ_ERROR",
}


class NeptuneLoader:
    """Neptune's bulk loader through boto3's ``neptunedata`` client (SigV4 from the block)."""

    kind = "neptune"

    def __init__(self, cluster: NeptuneCluster):
        self.cluster = cluster

    def defaults(self) -> tuple[str | None, str | None]:
        return self.cluster.iam_role_arn, self.cluster.region_name

    def request_params(self, request: LoadRequest) -> dict[str, Any]:
        """The exact ``start_loader_job`` arguments for ``request``."""
        if not request.iam_role_arn:
            raise LoadRefused(
                L.LOAD_FAILED_INVALID_REQUEST,
                "no IAM role for the loader: set neptune_configuration.iam_role in the jobspec "
                "or iam_role_arn on the Neptune block",
            )
        params: dict[str, Any] = {
            "source": request.source,
            "format": request.format,
            "iamRoleArn": request.iam_role_arn,
            "s3BucketRegion": request.region or self.cluster.region_name,
            "mode": request.mode,
            "failOnError": request.fail_on_error,
            "parallelism": request.parallelism,
            "updateSingleCardinalityProperties": request.update_single_cardinality_properties,
            "queueRequest": request.queue_request,
        }
        if request.parser_configuration():
            params["parserConfiguration"] = request.parser_configuration()
        if request.dependencies:
            params["dependencies"] = list(request.dependencies)
        if not params["s3BucketRegion"]:
            raise LoadRefused(
                L.LOAD_FAILED_INVALID_REQUEST,
                "no region for the source bucket: "
                "set neptune_configuration.region or the block's region",
            )
        return params

    def start(self, request: LoadRequest) -> str:
        params = self.request_params(request)
        try:
            reply = self.cluster.client().start_loader_job(**params)
        except ClientError as exc:
            if is_transient(exc):
                raise
            code = exc.response.get("Error", {}).get("Code", "")
            message = exc.response.get("Error", {}).get("Message") or str(exc)
            status = _REFUSAL_STATUS.get(code, L.LOAD_FAILED_INVALID_REQUEST)
            raise LoadRefused(status, f"Neptune refused the load ({code}): {message}") from exc
        return str(reply["payload"]["loadId"])

    def status(self, load_id: str) -> LoadStatus:
        reply = self.cluster.client().get_loader_job_status(
            loadId=load_id, details=True, errors=True, page=1, errorsPerPage=MAX_ERROR_LOGS
        )
        return LoadStatus.from_payload(load_id, reply.get("payload") or {})

    def cancel(self, load_id: str) -> None:
        self.cluster.client().cancel_loader_job(loadId=load_id)

    def verify(self, request: LoadRequest) -> dict[str, Any] | None:
        """Count what the graph holds: SPARQL for RDF, Gremlin for CSV, openCypher otherwise."""
        client = self.cluster.client()
        if request.format == "csv":
            from gremlin_python.process.anonymous_traversal import traversal
            from gremlin_python.process.translator import Translator
            from gremlin_python.structure.graph import Graph

            g = traversal().with_(Graph())
            translate = Translator("g").translate
            counts = {}
            for name, query in (
                ("vertices", translate(g.V().count().bytecode)),
                ("edges", translate(g.E().count().bytecode)),
            ):
                reply = client.execute_gremlin_query(gremlinQuery=query)
                counts[name] = _graphson_number(reply.get("result"))
            return {
                "what": "vertices and edges in the graph",
                "query": "g.V().count(); g.E().count()",
                "count": counts["vertices"] + counts["edges"],
                **counts,
            }
        if request.format == "opencypher":
            query = "MATCH (n) RETURN count(n) AS n"
            reply = client.execute_open_cypher_query(openCypherQuery=query)
            return {
                "what": "nodes in the graph",
                "query": query,
                "count": int(reply["results"][0]["n"]),
            }
        query = count_query(request)
        return {"what": count_what(request), "query": query, "count": self._sparql_count(query)}

    def _sparql_count(self, query: str) -> int:
        """``POST /sparql``, SigV4-signed: neptunedata has no SPARQL call, botocore signs for us."""
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        url = f"{self.cluster.endpoint}/sparql"
        body = httpx.QueryParams({"query": query}).__str__()
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/sparql-results+json",
        }
        aws_request = AWSRequest(method="POST", url=url, data=body, headers=headers)
        credentials = self.cluster.credentials.get_boto3_session().get_credentials()
        SigV4Auth(
            credentials.get_frozen_credentials(), "neptune-db", self.cluster.region_name
        ).add_auth(aws_request)
        reply = httpx.post(
            url, content=body, headers=dict(aws_request.headers.items()), timeout=120
        )
        reply.raise_for_status()
        bindings = reply.json()["results"]["bindings"]
        return int(bindings[0]["n"]["value"]) if bindings else 0


def _graphson_number(result: Any) -> int:
    """The single number in a Gremlin GraphSON reply (``{"data": {"@value": [{"@value": 3}]}}``)."""
    value = result
    while True:
        if isinstance(value, dict):
            value = value.get("data", value.get("@value"))
        elif isinstance(value, list) and len(value) == 1:
            value = value[0]
        else:
            break
    return int(value)
