"""A PostgreSQL database as a Prefect block: where the session store lives."""

from __future__ import annotations

from typing import Literal

from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator


class PostgresDatabase(Block):
    """Connection settings; the password is a secret, never part of the URL."""

    _block_type_name = "PostgreSQL Database"
    _description = "A PostgreSQL URL, its password (secret), pool size and SSL mode."

    url: str = Field(
        description="postgresql://user@host:5432/dbname (no password: use the password field)."
    )
    password: SecretStr | None = Field(default=None, description="The user's password.")
    pool_size: int = Field(default=4, ge=1, le=100, description="Connections kept open.")
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = Field(
        default="prefer", description="libpq SSL mode; verify-full for managed databases."
    )

    @field_validator("url")
    @classmethod
    def _no_password_in_url(cls, url: str) -> str:
        from psycopg.conninfo import conninfo_to_dict

        try:
            parts = conninfo_to_dict(url)
        except Exception as exc:
            raise ValueError(f"url is not a PostgreSQL connection string: {exc}") from None
        if parts.get("password"):
            raise ValueError("url contains a password: put it in the password field (a secret)")
        return url

    def conninfo(self) -> str:
        """The libpq connection string with the password and SSL mode filled in."""
        from psycopg.conninfo import make_conninfo

        extra: dict[str, str] = {"sslmode": self.sslmode}
        if self.password is not None:
            extra["password"] = self.password.get_secret_value()
        return make_conninfo(self.url, **extra)
