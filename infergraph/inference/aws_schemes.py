"""Registers the AWS sources and sinks under their URI schemes.

Importing this module (the inference flow does) makes these strings usable as a
flow's ``source`` and ``sinks``:

- source ``s3://bucket/key.png``: one object; ``s3://bucket/prefix/``: every image
  under a prefix; ``s3://bucket/photos/*.jpg``: a key pattern;
- source ``sqs://<SqsQueue block>``: request messages or S3 event notifications;
- sink ``s3://bucket/prefix/``: one CSV object per result chunk;
- sink ``dynamodb://<DynamoDBTable block>``: a results table;
- sink ``sqs://<SqsQueue block>``: one message per result.

Each module documents its ``?option=value`` settings.
"""

from __future__ import annotations

from infergraph.inference.sinks.base import SINK_SCHEMES
from infergraph.inference.sinks.dynamodb import open_dynamodb
from infergraph.inference.sinks.s3_csv import open_s3_csv
from infergraph.inference.sinks.sqs import open_sqs_sink
from infergraph.inference.sources.base import SOURCE_SCHEMES
from infergraph.inference.sources.s3 import open_s3
from infergraph.inference.sources.sqs import open_sqs

SOURCE_SCHEMES.update(s3=open_s3, sqs=open_sqs)
SINK_SCHEMES.update(s3=open_s3_csv, dynamodb=open_dynamodb, sqs=open_sqs_sink)
