"""Types every feature's protocol shares: the error envelope, bounded ids and page parameters."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from store.models import MAX_ROW_ID, VERSION_NAME_PATTERN

# Database ids are 64-bit signed integers: anything outside is refused before it reaches a query.
MAX_PAGE = 200

RowId = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="A row id.")]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description=f"Rows per page, 1 to {MAX_PAGE}.")]
Cursor = Annotated[
    int | None,
    Query(ge=1, le=MAX_ROW_ID, description="`next_cursor` of the previous page; omit for the newest rows."),
]
UserId = Annotated[str, StringConstraints(min_length=1, max_length=128, strip_whitespace=True)]
VersionName = Annotated[
    str, StringConstraints(min_length=1, max_length=32, pattern=VERSION_NAME_PATTERN, strip_whitespace=True)
]


class Strict(BaseModel):
    """Request bodies refuse unknown fields: a `user` in a body is an error, never an identity."""

    model_config = ConfigDict(extra="forbid")


class ErrorDetail(BaseModel):
    code: str
    message: str
    hint: str | None = None
    interaction_id: int | None = None
    reference: str | None = None


class ErrorEnvelope(BaseModel):
    error: ErrorDetail


class PageInfo(BaseModel):
    has_more: bool = Field(description="More (older) rows exist.")
    next_cursor: int | None = Field(description="Pass as `before` to get them.")


ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorEnvelope} for status in (401, 403, 404, 409, 413, 422, 503)
}
