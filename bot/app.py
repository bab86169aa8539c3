"""Build the Bolt app (AsyncApp) on the serving services, and mount it on the service's FastAPI app.

HTTP mode: events, interactivity and slash commands all arrive at POST /slack/events, where Bolt
verifies the signature (forged or stale requests get 401). Socket Mode: `start_socket_mode` connects with
the app-level token instead, and no route is needed.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request, Response
from slack_bolt.adapter.fastapi.async_handler import AsyncSlackRequestHandler
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_bolt.response import BoltResponse
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler, async_default_handlers
from slack_sdk.web.async_client import AsyncWebClient

from bot import listeners
from bot.dedupe import EventDeduper
from bot.deps import BotDeps
from bot.errors import report_failure
from serving.access import AccessPolicy
from serving.api.deps import Services

log = logging.getLogger(__name__)

SLACK_EVENTS_PATH = "/slack/events"


def build_slack_client(*, bot_token: str, api_url: str) -> AsyncWebClient:
    # 429s carry Retry-After: wait and retry rather than drop an answer.
    handlers = [*async_default_handlers(), AsyncRateLimitErrorRetryHandler(max_retry_count=2)]
    return AsyncWebClient(token=bot_token, base_url=api_url, retry_handlers=handlers)


def build_slack_app(
    *,
    services: Services,
    access: AccessPolicy,
    bot_token: str,
    signing_secret: str | None,
    api_url: str,
    stream_interval_s: float = 1.0,
    run_poll_interval_s: float = 2.0,
) -> AsyncApp:
    """The Bolt app with every listener registered. `api_url` lets tests point it at a local stand-in."""
    app = AsyncApp(
        name="tuneloop",
        client=build_slack_client(bot_token=bot_token, api_url=api_url),
        # Explicit, so that Bolt never falls back to a SLACK_SIGNING_SECRET from the environment.
        signing_secret=signing_secret or "",
        process_before_response=False,
        logger=logging.getLogger("bot.bolt"),
    )
    deps = BotDeps(
        services=services,
        access=access,
        deduper=EventDeduper(engine=services.engine),
        stream_interval_s=stream_interval_s,
        run_poll_interval_s=run_poll_interval_s,
    )

    async def skip_redelivered_events(body: dict[str, Any], next: Any) -> BoltResponse | None:
        # Retries (X-Slack-Retry-Num) and Socket Mode redeliveries carry the same event_id: ack them, do nothing.
        event_id = body.get("event_id")
        if body.get("type") == "event_callback" and event_id and not deps.deduper.event(str(event_id)):
            return BoltResponse(status=200, body="")
        await next()
        return None

    app.middleware(skip_redelivered_events)

    async def on_error(error: Exception, body: dict[str, Any], client: AsyncWebClient) -> None:
        await report_failure(error=error, client=client, body=body)

    app.error(on_error)
    listeners.register(app, deps)
    return app


def attach_slack(app: FastAPI, slack_app: AsyncApp) -> None:
    """Mount POST /slack/events (events, interactivity and slash commands) on the service's app."""
    handler = AsyncSlackRequestHandler(slack_app)

    async def slack_events(request: Request) -> Response:
        return await handler.handle(request)

    app.add_api_route(SLACK_EVENTS_PATH, slack_events, methods=["POST"], include_in_schema=False)


async def start_socket_mode(slack_app: AsyncApp, *, app_token: str) -> AsyncSocketModeHandler:
    """Connect over Socket Mode (no public URL needed); close with `await handler.close_async()`."""
    handler = AsyncSocketModeHandler(slack_app, app_token)
    await handler.connect_async()  # type: ignore[no-untyped-call]
    log.info("slack.socket_mode connected")
    return handler
