"""The App Home tab: reviewers see pending corrections, admins the adapter versions."""

from __future__ import annotations

import asyncio

from slack_sdk.web.async_client import AsyncWebClient

from bot import views
from bot.deps import BotDeps
from store import interactions as interaction_repo
from store.db import session_scope


def build_home(deps: BotDeps, *, user_id: str, notice: str | None = None) -> views.Block:
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
    versions = deps.services.admin.versions() if is_admin else []
    return views.home_view(
        user_id=user_id, is_reviewer=is_reviewer, is_admin=is_admin, pending=pending, versions=versions, notice=notice
    )


async def publish_home(deps: BotDeps, client: AsyncWebClient, *, user_id: str, notice: str | None = None) -> None:
    view = await asyncio.to_thread(build_home, deps, user_id=user_id, notice=notice)
    await client.views_publish(user_id=user_id, view=view)
