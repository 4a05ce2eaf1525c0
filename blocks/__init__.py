"""Prefect blocks: where infergraph keeps credentials, endpoints and resource names.

``prefect block register -m blocks`` registers every block type defined here;
prefect-aws' ``AwsCredentials`` and ``S3Bucket`` and prefect-kubernetes'
``KubernetesCredentials`` are reused as they are.
"""

from blocks.control_panel import ControlPanel
from blocks.dynamodb import DynamoDBTable
from blocks.neptune import NeptuneCluster
from blocks.oxigraph import OxigraphStore
from blocks.postgres import PostgresDatabase
from blocks.sns import SnsTopic
from blocks.sqs import SqsQueue

__all__ = [
    "ControlPanel",
    "DynamoDBTable",
    "NeptuneCluster",
    "OxigraphStore",
    "PostgresDatabase",
    "SnsTopic",
    "SqsQueue",
]
