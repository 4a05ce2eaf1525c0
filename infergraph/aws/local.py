"""Local AWS (the devstack's emulator) as seen from below the devstack.

``python -m infergraph.devstack up`` saves an AwsCredentials block named
:data:`LOCAL_CREDENTIALS_BLOCK` pointing at its emulator; commands that would
otherwise fall back to the default AWS chain use it when it is alive.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

from prefect_aws import AwsCredentials

#: The AwsCredentials block the devstack saves for its emulator.
LOCAL_CREDENTIALS_BLOCK = "local-aws"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
#: Where the devstack keeps its state and the ``blocks.yaml`` it saved (``INFERGRAPH_HOME``).
LOCAL_HOME = Path(os.environ.get("INFERGRAPH_HOME", Path.home() / ".infergraph")) / "local-aws"


def endpoint_of(credentials: AwsCredentials) -> str | None:
    params = credentials.aws_client_parameters
    return str(params.endpoint_url) if params and params.endpoint_url else None


def is_local(credentials: AwsCredentials) -> bool:
    """True when the block talks to an endpoint on this machine."""
    endpoint = endpoint_of(credentials)
    return bool(endpoint) and urlparse(endpoint).hostname in LOOPBACK


def local_credentials() -> AwsCredentials | None:
    """The saved local block when its emulator answers now, else None."""
    import httpx

    try:
        credentials = AwsCredentials.load(LOCAL_CREDENTIALS_BLOCK)
    except ValueError:
        return None
    endpoint = endpoint_of(credentials)
    if not endpoint or not is_local(credentials):
        return None
    try:
        httpx.get(f"{endpoint.rstrip('/')}/moto-api/", timeout=2)
    except httpx.HTTPError:
        return None
    return credentials


def default_chain_has_credentials() -> bool:
    """True when boto3's default chain (variables, profile, instance role) finds credentials."""
    import boto3

    return boto3.Session().get_credentials() is not None
