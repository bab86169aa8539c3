"""The admins' Slack channel: promotions, rollbacks, rejected candidates and failed cycles are posted there.

`SlackAdminChannel` implements serving.notify.AdminNotifier; tuneloop.service attaches it when
`slack.admin_channel` is set and Slack is on. A promotion's message carries a Roll back button
(bot/listeners/actions/rollback_button.py). A post that Slack refuses is logged and dropped: the action it
reports has happened, and stands.
"""

from __future__ import annotations

import logging

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot import views
from serving.notify import AdminEvent

log = logging.getLogger(__name__)


class SlackAdminChannel:
    def __init__(self, *, client: AsyncWebClient, channel: str) -> None:
        self._client = client
        self._channel = channel

    async def notify(self, event: AdminEvent) -> None:
        try:
            await self._client.chat_postMessage(
                channel=self._channel,
                text=views.admin_event_text(event),
                blocks=views.admin_event_blocks(event),
                unfurl_links=False,
            )
        except SlackApiError as error:
            log.warning(
                "slack.admin_channel_post_failed channel=%s kind=%s version=%s run=%s error=%s",
                self._channel,
                event.kind,
                event.version,
                event.run_id,
                error.response.get("error"),
            )
            return
        log.info("slack.admin_channel_posted channel=%s kind=%s version=%s", self._channel, event.kind, event.version)
