"""boto3 clients built from a prefect-aws ``AwsCredentials`` block.

The block carries region, profile or keys and ``endpoint_url`` (for an emulator);
this module adds what every caller needs on top: a connection pool large enough
for concurrent downloads, standard retries with backoff, and one client per
process per (credentials, service) instead of one per call.
"""

from __future__ import annotations

import threading
from typing import Any

from botocore.config import Config
from prefect_aws import AwsCredentials

DEFAULT_CONFIG = Config(
    max_pool_connections=64,
    retries={"mode": "standard", "max_attempts": 5},
    connect_timeout=10,
    read_timeout=60,
)

#: For calls the code builds itself, many per image: client-side parameter
#: validation repeats what the code already guarantees (botocore documents turning
#: it off for speed), and the timestamps of GET and list responses are never read.
BULK_CONFIG = Config(parameter_validation=False)

_clients: dict[tuple[int, str, bool], Any] = {}
_lock = threading.Lock()


def aws_client(service: str, credentials: AwsCredentials | None = None, bulk: bool = False) -> Any:
    """A cached, thread-safe boto3 client; default credentials chain when none is given.

    ``bulk=True`` is for the per-image data path (image GETs, prefix listings,
    result writes): no parameter validation, and timestamps left as the strings
    AWS sent instead of parsed by dateutil. Together about 0.5 ms of client CPU
    per image, some 8% of the S3 → model → DynamoDB flow's (bench/aws_inference.py).
    """
    credentials = credentials or AwsCredentials()
    key = (hash(credentials), service, bulk)
    client = _clients.get(key)
    if client is None:
        with _lock:
            client = _clients.get(key)
            if client is None:
                _clients[key] = client = _new_client(service, credentials, bulk)
    return client


def _new_client(service: str, credentials: AwsCredentials, bulk: bool) -> Any:
    params = credentials.aws_client_parameters.get_params_override()
    config = DEFAULT_CONFIG.merge(params.pop("config")) if params.get("config") else DEFAULT_CONFIG
    params["config"] = config.merge(BULK_CONFIG) if bulk else config
    if credentials.region_name:
        params["region_name"] = credentials.region_name
    session = credentials.get_boto3_session()
    if bulk:
        # A per-session setting: clients made from other sessions still parse timestamps.
        # boto3 has no public accessor for its botocore session; ``_session`` is it.
        parsers = session._session.get_component("response_parser_factory")
        parsers.set_parser_defaults(timestamp_parser=str)
    return session.client(service, **params)
