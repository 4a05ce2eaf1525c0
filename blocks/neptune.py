"""An Amazon Neptune cluster as a Prefect block: where bulk loads go and how they are signed."""

from __future__ import annotations

from typing import Any

from prefect_aws import AwsCredentials
from prefect_aws.client_parameters import AwsClientParameters
from pydantic import Field, field_validator

from blocks.graph_store import GraphStoreDefaults
from infergraph.aws.clients import aws_client


class NeptuneCluster(GraphStoreDefaults):
    """A Neptune cluster endpoint, the IAM role its loader reads S3 with, and credentials.

    Requests to the cluster are SigV4-signed (service ``neptune-db``) with ``credentials``;
    ``iam_role_arn`` is the role *Neptune* assumes to read the source bucket, which a
    jobspec may override per job.
    """

    _block_type_name = "Neptune Cluster"
    _description = "An Amazon Neptune cluster endpoint, its loader IAM role, region, credentials."

    endpoint: str = Field(
        description="Cluster endpoint URL, e.g. https://my-cluster.cluster-xyz.eu-west-1."
        "neptune.amazonaws.com:8182"
    )
    iam_role_arn: str | None = Field(
        default=None, description="IAM role Neptune assumes to read S3 (loader iamRoleArn)."
    )
    region: str | None = Field(
        default=None,
        description="Region of the cluster and of the source bucket; default: the credentials'.",
    )
    credentials: AwsCredentials = Field(
        default_factory=AwsCredentials, description="AWS credentials that sign the requests."
    )

    @field_validator("endpoint")
    @classmethod
    def _url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if "://" not in value:
            value = f"https://{value}"
        return value

    @property
    def region_name(self) -> str | None:
        return self.region or self.credentials.region_name

    def signing_credentials(self) -> AwsCredentials:
        """The credentials re-pointed at the cluster endpoint (and its region)."""
        params = self.credentials.aws_client_parameters.model_dump()
        params["endpoint_url"] = self.endpoint
        return self.credentials.model_copy(
            update={
                "aws_client_parameters": AwsClientParameters(**params),
                "region_name": self.region_name,
            }
        )

    def client(self) -> Any:
        """boto3 ``neptunedata`` client for this cluster (cached per process)."""
        return aws_client("neptunedata", self.signing_credentials())
