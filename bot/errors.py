"""What a Slack user sees when something fails: a short, kind message and a reference id; the log has the cause."""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.views import failure_text
from serving.errors import EngineUnavailable, TuneloopError

log = logging.getLogger(__name__)


def new_ref() -> str:
    return uuid.uuid4().hex[:8]


def user_message(error: TuneloopError) -> str:
    """The reply for a failed question or command; the interaction id is the reference when there is one."""
    ref = error.interaction_id
    if isinstance(error, EngineUnavailable):
        saved = "your question was saved" if ref is not None else "please try again in a minute"
        return f"The model is unavailable right now; {saved}." + (f" (ref {ref})" if ref is not None else "")
    return failure_text(message=error.message, hint=error.hint, ref=ref)


def unexpected_message(ref: str) -> str:
    return f"Sorry, something went wrong on my side. An admin can look it up with ref {ref}."


async def tell_user(*, client: AsyncWebClient, body: dict[str, Any], text: str) -> None:
    """Best effort: through the response URL, else as an ephemeral message where the user acted."""
    try:
        response_url = body.get("response_url")
        if response_url:
            await AsyncWebhookClient(response_url).send(text=text, response_type="ephemeral")
            return
        event = body.get("event") or {}
        user = body.get("user_id") or (body.get("user") or {}).get("id") or event.get("user")
        channel = body.get("channel_id") or (body.get("channel") or {}).get("id") or event.get("channel")
        if user and channel:
            thread_ts = event.get("thread_ts") or event.get("ts") or (body.get("container") or {}).get("thread_ts")
            await client.chat_postEphemeral(channel=channel, user=user, text=text, thread_ts=thread_ts)
        elif user:
            await client.chat_postMessage(channel=user, text=text)
    except (SlackApiError, OSError) as error:
        log.warning("slack.tell_user_failed error=%s", error)


async def report_failure(*, error: Exception, client: AsyncWebClient, body: dict[str, Any]) -> None:
    """The one path for failures in listeners, lazy or not: log the cause with a ref, tell the user the ref."""
    if isinstance(error, TuneloopError):
        log.warning("slack.failed code=%s interaction=%s error=%s", error.code, error.interaction_id, error.message)
        await tell_user(client=client, body=body, text=user_message(error))
        return
    ref = new_ref()
    log.error("slack.unexpected_error ref=%s type=%s", ref, body.get("type"), exc_info=error)
    await tell_user(client=client, body=body, text=unexpected_message(ref))


Listener = Callable[..., Awaitable[None]]


def reports_failures(listener: Listener) -> Listener:
    """For listeners that ack first: report a later failure to the user here, never to Bolt.

    Bolt's async runner drops an ack that a fast failure follows, and then answers Slack 404; a failure
    that never leaves the listener keeps the ack's 200. The listener must take `body` and `client`.
    """

    @functools.wraps(listener)
    async def wrapper(**kwargs: Any) -> None:
        try:
            await listener(**kwargs)
        except Exception as error:
            await report_failure(error=error, client=kwargs["client"], body=kwargs["body"])

    return wrapper
