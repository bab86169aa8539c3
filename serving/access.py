"""Who may do what. Roles come from configuration, keyed by the identity a credential or Slack's signature proved.

employee  ask, vote, correct (a correction waits for a reviewer), read their own interactions
reviewer  also review corrections; their corrections are approved at once; read every interaction
admin     also train, promote, roll back, read the audit log, the runs and the dataset
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Literal

NO_ADMINS_HINT = (
    "No admins are configured. Name one with TUNELOOP_ACCESS__ADMINS='[\"USER_ID\"]', restart the service, "
    "and create their token with `tuneloop token create USER_ID` on the service's host."
)


class Role(IntEnum):
    """Ordered: each role may do everything the roles below it may."""

    employee = 1
    reviewer = 2
    admin = 3


# How the identity was proved: an API token, Slack's signature, or a dashboard session opened with a token.
Channel = Literal["token", "slack", "web"]


@dataclass(frozen=True, kw_only=True)
class Principal:
    """An identity proved at the edge (an API token, or Slack's signed payload), with its role."""

    user_id: str
    role: Role
    via: Channel

    @property
    def is_reviewer(self) -> bool:
        return self.role >= Role.reviewer

    @property
    def is_admin(self) -> bool:
        return self.role >= Role.admin


@dataclass(frozen=True, kw_only=True)
class AccessPolicy:
    reviewers: frozenset[str] = field(default_factory=frozenset)
    admins: frozenset[str] = field(default_factory=frozenset)
    # Laptop opt-in, and only when the service listens on loopback: with no admins, everyone administers.
    open_mode: bool = False

    def role_of(self, user_id: str) -> Role:
        if user_id in self.admins or (self.open_mode and not self.admins):
            return Role.admin
        if user_id in self.reviewers:
            return Role.reviewer
        return Role.employee

    def principal(self, user_id: str, *, via: Channel) -> Principal:
        return Principal(user_id=user_id, role=self.role_of(user_id), via=via)

    def is_admin(self, user_id: str) -> bool:
        return self.role_of(user_id) >= Role.admin

    def is_reviewer(self, user_id: str) -> bool:
        return self.role_of(user_id) >= Role.reviewer

    @property
    def mode(self) -> str:
        if self.open_mode and not self.admins:
            return "open"
        return "restricted" if self.admins else "no admins"

    def refusal_hint(self, needed: Role) -> str:
        if needed is Role.admin and not self.admins:
            return NO_ADMINS_HINT
        if needed is Role.admin:
            return "Ask an admin, or have your id added to TUNELOOP_ACCESS__ADMINS."
        return "Ask an admin to add your id to TUNELOOP_ACCESS__REVIEWERS."


def is_loopback(host: str) -> bool:
    return host in ("127.0.0.1", "::1", "localhost") or host.startswith("127.")
