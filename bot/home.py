"""The App Home tab: reviewers see pending corrections and the reviewed answers, admins the adapter versions."""

from __future__ import annotations

import asyncio
import logging

from slack_sdk.web.async_client import AsyncWebClient

from bot import memory as reviewed_memory
from bot import views
from bot.deps import BotDeps
from serving.access import Role
from store import interactions as interaction_repo
from store.db import session_scope

log = logging.getLogger(__name__)


def build_home(deps: BotDeps, *, user_id: str, notice: str | None = None, search: str | None = None) -> views.Block:
    """The Home view for `user_id`; reads the store (call it off the event loop)."""
    is_reviewer = deps.access.is_reviewer(user_id)
    is_admin = deps.access.is_admin(user_id)
    pending: list[views.PendingCorrection] = []
    if is_reviewer:
        corrections = deps.services.feedback.pending()
        with session_scope(deps.services.engine) as session:
            for correction in corrections:
                interaction = interaction_repo.get_interaction(
                    session=session, interaction_id=correction.interaction_id
                )
                assert correction.id is not None
                pending.append(
                    views.PendingCorrection(
                        correction_id=correction.id,
                        author_id=correction.author_id,
                        text=correction.text,
                        question=interaction.question if interaction else "(missing)",
                        answer=(interaction.answer or "") if interaction else "(missing)",
                    )
                )
    reviewed: list[views.ReviewedEntry] = []
    if is_reviewer:
        reviewed, search, notice = _reviewed_answers(deps, search=search, notice=notice)
    versions = deps.services.admin.versions() if is_admin else []
    return views.home_view(
        user_id=user_id,
        is_reviewer=is_reviewer,
        is_admin=is_admin,
        pending=pending,
        versions=versions,
        notice=notice,
        reviewed=reviewed,
        search=search,
    )


def _reviewed_answers(
    deps: BotDeps, *, search: str | None, notice: str | None
) -> tuple[list[views.ReviewedEntry], str | None, str | None]:
    """The search's results, or the newest entries when there is no search or it cannot run (then says so)."""
    memory = deps.services.memory
    if search:
        try:
            return reviewed_memory.search_entries(memory=memory, text=search), search, notice
        except Exception as error:
            log.warning("slack.memory_search_failed error=%s", type(error).__name__, exc_info=error)
    if search:
        notice = "Search is unavailable right now; here are the newest reviewed answers."
    return reviewed_memory.newest_entries(engine=deps.services.engine), None, notice


async def publish_home(
    deps: BotDeps, client: AsyncWebClient, *, user_id: str, notice: str | None = None, search: str | None = None
) -> None:
    view = await asyncio.to_thread(build_home, deps, user_id=user_id, notice=notice, search=search)
    await client.views_publish(user_id=user_id, view=view)


def reviewers_only(deps: BotDeps) -> str:
    return "Only reviewers can change reviewed answers. " + deps.access.refusal_hint(Role.reviewer)


async def refused_unless_reviewer(
    deps: BotDeps, client: AsyncWebClient, *, user_id: str, action: str, entry_id: int | None
) -> bool:
    """True (after auditing the refusal and saying so on the user's Home tab) when `user_id` is no reviewer:
    a stale or forged view's buttons reach us all the same."""
    if deps.access.is_reviewer(user_id):
        return False
    await asyncio.to_thread(
        reviewed_memory.record_refusal, engine=deps.services.engine, actor=user_id, action=action, entry_id=entry_id
    )
    await publish_home(deps, client, user_id=user_id, notice=reviewers_only(deps))
    return True
