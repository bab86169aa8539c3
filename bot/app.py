"""Build the Bolt app (AsyncApp) on the serving services, and mount it on the service's FastAPI app.

HTTP mode: events, interactivity and slash commands all arrive at POST /slack/events, where Bolt
verifies the signature (forged or stale requests get 401; bodies Slack never sends get 400). Events are
acked before any store work (redelivered ones are recognised by the listeners, after it: bot/dedupe.py);
what answers in its ack (`/tuneloop status`, the correction modal's check) only reads, in a thread.
Socket Mode: `start_socket_mode` connects with the app-level token instead, and no route is needed.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request, Response
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.adapter.starlette.async_handler import to_async_bolt_request, to_starlette_response
from slack_bolt.async_app import AsyncApp
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler, async_default_handlers
from slack_sdk.web.async_client import AsyncWebClient

from bot import listeners
from bot.dedupe import EventDeduper
from bot.deps import BotDeps
from bot.errors import report_failure
from bot.streaming import StreamingSupport
from serving.access import AccessPolicy
from serving.api.deps import Services

log = logging.getLogger(__name__)

SLACK_EVENTS_PATH = "/slack/events"


def build_slack_client(*, bot_token: str, api_url: str) -> AsyncWebClient:
    # 429s carry Retry-After: wait and retry rather than drop an answer (partial updates use a client that does
    # not: bot.streaming.progress_client).
    handlers = [*async_default_handlers(), AsyncRateLimitErrorRetryHandler(max_retry_count=2)]
    return AsyncWebClient(token=bot_token, base_url=api_url, retry_handlers=handlers)


def build_slack_app(
    *,
    services: Services,
    access: AccessPolicy,
    bot_token: str,
    signing_secret: str | None,
    api_url: str,
    streaming: bool = True,
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
        streaming=StreamingSupport(enabled=streaming),
        stream_interval_s=stream_interval_s,
        run_poll_interval_s=run_poll_interval_s,
    )

    async def on_error(error: Exception, body: dict[str, Any], client: AsyncWebClient) -> None:
        await report_failure(error=error, client=client, body=body)

    app.error(on_error)
    listeners.register(app, deps)
    return app


def attach_slack(app: FastAPI, slack_app: AsyncApp) -> None:
    """Mount POST /slack/events (events, interactivity and slash commands) on the service's app.

    A body Slack would never send answers 400 here, before Bolt: Bolt's parser, its listener matchers and
    its error path index payloads without checking them, and would answer 500 (or drop the connection).
    """

    async def slack_events(request: Request) -> Response:
        body = await request.body()
        try:
            # Bolt parses the body (JSON, or a form's `payload=<json>`) before it checks the signature.
            bolt_request = to_async_bolt_request(request, body)
            problem = unreadable(bolt_request.body)
        except (ValueError, AttributeError, TypeError) as error:  # UnicodeDecodeError and JSONDecodeError included
            problem = f"unparsable ({type(error).__name__})"
        if problem is not None:
            log.warning("slack.malformed_request bytes=%d problem=%s", len(body), problem)
            return Response(status_code=400, content="malformed request")
        return to_starlette_response(await slack_app.async_dispatch(bolt_request))

    app.add_api_route(SLACK_EVENTS_PATH, slack_events, methods=["POST"], include_in_schema=False)


# Interactive payloads that always name the user who acted, and those that always carry a trigger id.
_INTERACTIVE = {"block_actions", "block_suggestion", "view_submission", "view_closed", "message_action", "shortcut"}
_TRIGGERED = {"block_actions", "message_action", "shortcut", "view_submission"}


def unreadable(body: Any) -> str | None:
    """Why Slack would never send `body` (for the log), or None when Bolt and our listeners can read it."""
    if not isinstance(body, dict):
        return "not an object"
    kind = body.get("type")
    if kind is not None and not isinstance(kind, str):
        return "type is not a string"
    if kind == "event_callback":
        event = body.get("event")
        if not isinstance(event, dict) or not _is_text(event.get("type")):
            return "event_callback without an event type"
    if "command" in body and not (_is_text(body["command"]) and _is_text(body.get("user_id"))):
        return "slash command without a command or user"
    if kind in _INTERACTIVE:
        user = body.get("user")
        if not isinstance(user, dict) or not _is_text(user.get("id")):
            return f"{kind} without a user"
    if kind in _TRIGGERED and not _is_text(body.get("trigger_id")):
        return f"{kind} without a trigger id"
    if kind == "block_actions":
        actions = body.get("actions")
        if not isinstance(actions, list) or not actions:
            return "block_actions without actions"
        if not all(isinstance(action, dict) and _is_text(action.get("action_id")) for action in actions):
            return "block_actions with an action that has no action_id"
    if kind in ("view_submission", "view_closed"):
        view = body.get("view")
        if not isinstance(view, dict) or not (_is_text(view.get("type")) and _is_text(view.get("callback_id"))):
            return f"{kind} without a view type and callback id"
    if kind in ("message_action", "shortcut") and not _is_text(body.get("callback_id")):
        return f"{kind} without a callback id"
    return None


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


async def start_socket_mode(slack_app: AsyncApp, *, app_token: str) -> AsyncSocketModeHandler:
    """Connect over Socket Mode (no public URL needed); close with `await handler.close_async()`."""
    handler = AsyncSocketModeHandler(slack_app, app_token)
    await handler.connect_async()  # type: ignore[no-untyped-call]
    log.info("slack.socket_mode connected")
    return handler
