"""Configuration of the prediction API, read from ``INFERGRAPH_API_*`` environment variables.

Everything an operator may need to change lives here, so a container is
configured by its environment alone. :func:`check_settings` holds the rules that
make the server refuse to start (a default signing key, no users) so that both
``python -m infergraph.api`` and ``uvicorn --factory infergraph.api.app:create_app`` enforce them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from infergraph.predictors.loading import PredictorSpec

ENV_PREFIX = "INFERGRAPH_API_"
#: Only ever acceptable with ``INFERGRAPH_API_DEV=1``: anyone who reads this file can sign tokens.
DEFAULT_SIGNING_KEY = "infergraph-development-signing-key-do-not-use-in-production"
#: HS256 keys shorter than the hash output weaken the signature (RFC 7518 §3.2).
MIN_SIGNING_KEY_BYTES = 32
DEFAULT_REQUEST_LOG = "logs/requests-{started}-{pid}.jsonl"


class SettingsError(ValueError):
    """The configuration cannot be used; the message names the variable to set."""


class ApiSettings(BaseSettings):
    """Settings of the online prediction API (environment variable = prefix + upper-case name)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    # Serving
    host: str = Field(default="127.0.0.1", description="Interface to listen on.")
    port: int = Field(default=8000, ge=0, le=65535, description="TCP port.")
    dev: bool = Field(
        default=False, description="Development mode: allows the default signing key."
    )
    forwarded_allow_ips: str = Field(
        default="",
        description="Proxies trusted to set X-Forwarded-For/-Proto (comma-separated addresses "
        "or networks, '*' for any). Empty: the headers are ignored and the client is the "
        "connection's address, so nobody can pick the address the sign-in limit counts.",
    )
    header_timeout_seconds: float = Field(
        default=10.0, gt=0, description="A request's headers must arrive within this, else 408."
    )
    body_timeout_seconds: float = Field(
        default=120.0, gt=0, description="A request's body must arrive within this of its headers."
    )
    keep_alive_seconds: float = Field(
        default=5.0, gt=0, description="An idle connection is closed after this."
    )
    max_connections: int = Field(
        default=512, ge=1, description="Open connections per process; more get 503 and close."
    )

    # Authentication
    signing_key: SecretStr = Field(
        default=SecretStr(DEFAULT_SIGNING_KEY),
        description=f"HS256 key for tokens, at least {MIN_SIGNING_KEY_BYTES} bytes.",
    )
    token_ttl_seconds: int = Field(default=1800, gt=0, description="Token lifetime.")
    issuer: str = Field(default="infergraph", description="The tokens' 'iss' claim.")
    users_file: Path | None = Field(
        default=None, description="htpasswd-style file of 'name:bcrypt-hash' lines."
    )
    users_secret: str | None = Field(
        default=None, description="Name of a Prefect Secret block holding the users."
    )
    max_failed_logins: int = Field(
        default=5, ge=1, description="Failed sign-ins per client within the window before 429."
    )
    failed_login_window_seconds: float = Field(default=300.0, gt=0)

    # Uploads
    max_file_bytes: int = Field(default=10 * 1024 * 1024, gt=0, description="Per uploaded file.")
    max_files_per_request: int = Field(default=32, ge=1, description="Files in one batch form.")
    max_pixels: int = Field(default=20_000_000, gt=0, description="Width × height per image.")
    decode_workers: int = Field(
        default=4, ge=1, description="Threads decoding and preprocessing uploads."
    )
    decode_budget_mb: float = Field(
        default=256.0,
        gt=0,
        description="Memory (MiB) decodes in this process may hold at once; more wait. "
        "The default fits one image of the default MAX_PIXELS at 4 bytes a pixel.",
    )
    decode_wait_seconds: float = Field(
        default=30.0, ge=0, description="Longest an upload waits for the decode budget, then 503."
    )

    # Model and micro-batching
    predictor: str = Field(default="infergraph.predictors.digits:DigitsClassifier")
    predictor_options: dict[str, Any] = Field(default_factory=dict)
    torch_threads: int = Field(
        default=1,
        ge=0,
        description="Threads per forward pass (0: torch's default, one per core). The event "
        "loop and decoders need cores too, and intra-op threads that must all be scheduled "
        "at once stall badly on busy cores; raise it for big models on many cores.",
    )
    micro_batch_size: int = Field(
        default=32, ge=1, description="Most records per forward pass; 1 turns batching off."
    )
    micro_batch_wait_ms: float = Field(
        default=5.0, ge=0, description="Longest a request waits for others to join its batch."
    )

    # Request log
    request_log: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [DEFAULT_REQUEST_LOG],
        description="Sink specs ('*.jsonl', '*.csv', 'dynamodb://…'), comma-separated or JSON; "
        "'{started}' and '{pid}' are replaced so each server process has its own local file.",
    )
    request_log_queue: int = Field(
        default=10_000, ge=1, description="Requests held for the log writer before dropping."
    )
    request_log_flush_seconds: float = Field(
        default=1.0, gt=0, description="Longest a logged request waits before being written."
    )
    request_log_skip: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["/health"], description="Paths not logged (probes)."
    )
    aws_credentials: str | None = Field(
        default=None, description="AwsCredentials block name for AWS sinks; default chain if empty."
    )

    @field_validator("request_log", "request_log_skip", mode="before")
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    def predictor_spec(self) -> PredictorSpec:
        return PredictorSpec(path=self.predictor, options=self.predictor_options)

    def upload_limit(self, files: int) -> int:
        """Most request-body bytes accepted for ``files`` files (multipart framing included)."""
        return files * (self.max_file_bytes + 4096) + 16 * 1024


def check_settings(settings: ApiSettings) -> list[str]:
    """Refuse unsafe or incomplete configurations; return warnings worth logging."""
    warnings: list[str] = []
    key = settings.signing_key.get_secret_value()
    if key == DEFAULT_SIGNING_KEY:
        if not settings.dev:
            raise SettingsError(
                f"refusing to start with the default signing key: set {ENV_PREFIX}SIGNING_KEY "
                f"to a random secret of at least {MIN_SIGNING_KEY_BYTES} bytes "
                '(e.g. python -c "import secrets; print(secrets.token_urlsafe(48))"), '
                f"or set {ENV_PREFIX}DEV=1 for local development"
            )
        warnings.append("development mode: tokens are signed with the public default key")
    elif len(key.encode()) < MIN_SIGNING_KEY_BYTES:
        raise SettingsError(
            f"{ENV_PREFIX}SIGNING_KEY is {len(key.encode())} bytes; "
            f"use at least {MIN_SIGNING_KEY_BYTES} random bytes"
        )
    if settings.users_file is None and not settings.users_secret:
        raise SettingsError(
            f"no users configured: set {ENV_PREFIX}USERS_FILE (create it with "
            f"'python -m infergraph.api.users add NAME --file PATH') or {ENV_PREFIX}USERS_SECRET "
            "(the name of a Prefect Secret block)"
        )
    if settings.users_file is not None and settings.users_secret:
        raise SettingsError(f"set only one of {ENV_PREFIX}USERS_FILE and {ENV_PREFIX}USERS_SECRET")
    if settings.users_file is not None and not settings.users_file.is_file():
        raise SettingsError(f"{ENV_PREFIX}USERS_FILE: no such file: {settings.users_file}")
    largest = settings.max_pixels * 7  # 4 bytes stored by Pillow + 3 of the uint8 result
    if settings.decode_budget_mb * 1024 * 1024 < largest:
        warnings.append(
            f"{ENV_PREFIX}DECODE_BUDGET_MB={settings.decode_budget_mb:g} is below the "
            f"{largest / 1024 / 1024:,.0f} MiB an image of {ENV_PREFIX}MAX_PIXELS="
            f"{settings.max_pixels:,} can need: such images will be refused"
        )
    if not settings.request_log:
        warnings.append("request log disabled: INFERGRAPH_API_REQUEST_LOG is empty")
    return warnings
