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

_clients: dict[tuple[int, str], Any] = {}
_lock = threading.Lock()


def aws_client(service: str, credentials: AwsCredentials | None = None) -> Any:
    """A cached, thread-safe boto3 client; default credentials chain when none is given."""
    credentials = credentials or AwsCredentials()
    key = (hash(credentials), service)
    client = _clients.get(key)
    if client is None:
        with _lock:
            client = _clients.get(key)
            if client is None:
                params = credentials.aws_client_parameters.get_params_override()
                config = params.pop("config", None)
                params["config"] = DEFAULT_CONFIG.merge(config) if config else DEFAULT_CONFIG
                if credentials.region_name:
                    params["region_name"] = credentials.region_name
                client = credentials.get_boto3_session().client(service, **params)
                _clients[key] = client
    return client
