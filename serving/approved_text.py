"""What a reviewer approves is what the bot says: so no machine credential may be approved.

A key in an approved answer would be handed to whoever asks, at once through the memory of reviewed answers and
later through the adapter. Corrections are checked when they are submitted and again when they are approved
(one submitted before this check existed), and a reviewer's edit of a reviewed answer is checked too. The
message names the kinds found, never the text.
"""

from __future__ import annotations

from serving.errors import InvalidQuestion
from training.redact import find_credentials

CREDENTIAL_HINT = "Remove the credential; point to where it is kept (a vault, a channel) instead."


def refuse_credentials(text: str, *, what: str) -> None:
    """Raise InvalidQuestion (422 over HTTP, a field error in Slack) when `text` holds a machine credential."""
    credentials = find_credentials(text)
    if credentials:
        raise InvalidQuestion(
            f"{what} contains what looks like a secret ({', '.join(credentials)}); it was not saved",
            hint=CREDENTIAL_HINT,
        )
