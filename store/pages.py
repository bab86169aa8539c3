"""Keyset pagination, newest first: a page of rows, whether more exist, and the cursor of the next page."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlmodel import Session, col
from sqlmodel.sql.expression import SelectOfScalar

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class Page(Generic[T]):
    items: list[T]
    has_more: bool
    next_cursor: int | None  # pass as `before` to get the next (older) page


def newest_first(
    *, session: Session, statement: SelectOfScalar[T], id_column: Any, limit: int, before: int | None
) -> Page[T]:
    """Rows with id < `before` (all when None), newest first. Ids are the cursor: stable while rows are added."""
    if before is not None:
        statement = statement.where(col(id_column) < before)
    rows = list(session.exec(statement.order_by(col(id_column).desc()).limit(limit + 1)).all())
    has_more = len(rows) > limit
    items = rows[:limit]
    last_id = getattr(items[-1], "id", None) if items else None
    return Page(items=items, has_more=has_more, next_cursor=last_id if has_more else None)
