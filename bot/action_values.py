"""Row ids that buttons and modals carry: read them, or tell the user kindly that the button is unusable."""

from __future__ import annotations

from typing import Any

from serving.errors import InvalidQuestion
from store.models import MAX_ROW_ID


def parse_row_id(value: Any) -> int | None:
    """A row id written as text (a button's value, a modal's metadata), or None when it is not one."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and 0 < int(value) <= MAX_ROW_ID:
        return int(value)
    return None


def row_id(action: dict[str, Any]) -> int:
    """The id a button carries. A value Slack would only send for a damaged or forged message is refused."""
    found = parse_row_id(action.get("value"))
    if found is not None:
        return found
    raise InvalidQuestion(
        "this button does not point at anything I know",
        hint="It may be from an old or edited message; ask again, or use the newest answer's buttons.",
    )
