"""Row ids carried in buttons' `value`: read them, or tell the user kindly that the button is unusable."""

from __future__ import annotations

from typing import Any

from serving.errors import InvalidQuestion
from store.models import MAX_ROW_ID


def row_id(action: dict[str, Any]) -> int:
    """The id a button carries. A value Slack would only send for a damaged or forged message is refused."""
    value = action.get("value")
    if isinstance(value, str) and value.isdigit() and 0 < int(value) <= MAX_ROW_ID:
        return int(value)
    raise InvalidQuestion(
        "this button does not point at anything I know",
        hint="It may be from an old or edited message; ask again, or use the newest answer's buttons.",
    )
