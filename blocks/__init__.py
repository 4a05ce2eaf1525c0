"""Prefect blocks: where infergraph keeps credentials, endpoints and resource names.

``prefect block register -m blocks`` registers every block type defined here;
prefect-aws' ``AwsCredentials`` and ``S3Bucket`` and prefect-kubernetes'
``KubernetesCredentials`` are reused as they are.
"""

from blocks.dynamodb import DynamoDBTable
from blocks.neptune import NeptuneCluster
from blocks.oxigraph import OxigraphStore
from blocks.sns import SnsTopic
from blocks.sqs import SqsQueue

__all__ = ["DynamoDBTable", "NeptuneCluster", "OxigraphStore", "SnsTopic", "SqsQueue"]
