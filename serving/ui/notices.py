"""The one-line notices a page shows after an action (Post/Redirect/Get): fixed texts chosen by a code, so a
link cannot make the dashboard say something of the sender's choosing."""

from __future__ import annotations

NOTICES = {
    "approved": "Correction approved: it is in the memory and answers with it from now on.",
    "rejected": "Correction rejected.",
    "edited": "Correction edited and approved.",
    "memory_edited": "Memory entry edited.",
    "memory_retired": "Memory entry retired: it is no longer served.",
    "promoted": "Promoted: the new version serves from now on.",
    "rolled_back": "Rolled back.",
    "training": "A tuning cycle has started: its progress shows above, live.",
    "cancelled": "Nothing was changed.",
}


def notice_of(code: str | None) -> str | None:
    return NOTICES.get(code or "")
