"""Who may do what: reviewers correct without review; admins retrain, promote and roll back."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, kw_only=True)
class AccessPolicy:
    reviewers: frozenset[str] = field(default_factory=frozenset)
    admins: frozenset[str] = field(default_factory=frozenset)

    @property
    def open_mode(self) -> bool:
        # With no admins configured (a fresh laptop install) everyone administers; the service warns.
        return not self.admins

    def is_admin(self, user_id: str) -> bool:
        return self.open_mode or user_id in self.admins

    def is_reviewer(self, user_id: str) -> bool:
        return user_id in self.reviewers or self.is_admin(user_id)
