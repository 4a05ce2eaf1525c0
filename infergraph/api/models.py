"""The API's response bodies, as FastAPI documents them in ``/openapi.json``."""

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from infergraph.inference.records import Box


class TopClass(BaseModel):
    class_id: int
    category_name: str
    score: float = Field(ge=0, le=1)


class Prediction(BaseModel):
    """One image's prediction (or, in a batch, why it has none)."""

    model_config = ConfigDict(extra="allow")

    request_id: str
    record_id: str
    username: str
    filename: str
    extension: str = Field(description="The file name's extension (the type is read from content).")
    format: str | None = Field(default=None, description="Image format detected from the bytes.")
    date: str = Field(description="When the request arrived, ISO 8601 UTC.")
    class_id: int | None = None
    category_name: str | None = None
    score: float | None = Field(default=None, ge=0, le=1, description="Probability of class_id.")
    top_k: list[TopClass] | None = None
    boxes: list[Box] | None = Field(default=None, description="A detector's boxes, in pixels.")
    box_count: int | None = None
    success: bool
    status_code: int = 200
    error: str | None = None


class BatchPrediction(BaseModel):
    request_id: str
    username: str
    date: str
    count: int
    succeeded: int
    results: list[Prediction]


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int = Field(description="Seconds until the token expires.")


class ErrorDetail(BaseModel):
    detail: str


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorDetail} for code in codes}
