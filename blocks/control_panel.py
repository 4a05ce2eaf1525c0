"""The sorting arms' control panel as a Prefect block: where session progress is POSTed."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, field_validator


class ControlPanel(Block):
    """The panel's base URL; progress records go to ``<url>/log/``."""

    _block_type_name = "Sorting Control Panel"
    _description = "Base URL of the control panel that receives session progress logs."

    url: str = Field(description="e.g. https://panel.example.com (records go to <url>/log/)")

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {url!r}")
        return url
