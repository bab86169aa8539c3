"""Signed requests in Slack's real payload shapes, sent to the running app over HTTP.

Events are event_callback JSON; interactivity (block_actions, view_submission, message_action) is
form-encoded `payload=<json>`; slash commands are form-encoded fields. Every request carries
X-Slack-Request-Timestamp and X-Slack-Signature = v0=hmac_sha256(secret, f"v0:{ts}:{body}").
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
from typing import Any
from urllib.parse import urlencode

import httpx

from tests.bot.slack_stub import BOT_USER_ID, TEAM_ID

SIGNING_SECRET = "test-secret"
API_APP_ID = "A_TEST"
_ids = itertools.count(1)


def sign(body: str, *, secret: str = SIGNING_SECRET, timestamp: int | None = None) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}


def event_callback(event: dict[str, Any], *, event_id: str | None = None) -> dict[str, Any]:
    return {
        "token": "legacy-verification-token",
        "team_id": TEAM_ID,
        "api_app_id": API_APP_ID,
        "event": event,
        "type": "event_callback",
        "event_id": event_id or f"Ev{next(_ids):08d}",
        "event_time": int(time.time()),
        "authorizations": [
            {"team_id": TEAM_ID, "user_id": BOT_USER_ID, "is_bot": True, "is_enterprise_install": False}
        ],
        "is_ext_shared_channel": False,
    }


def app_mention(*, channel: str, user: str, text: str, ts: str, thread_ts: str | None = None) -> dict[str, Any]:
    event = {"type": "app_mention", "user": user, "text": text, "ts": ts, "channel": channel, "event_ts": ts}
    if thread_ts:
        event["thread_ts"] = thread_ts
    return event


def message(
    *, channel: str, user: str | None, text: str, ts: str, channel_type: str = "im", **extra: Any
) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "message", "channel": channel, "text": text, "ts": ts, "event_ts": ts}
    event["channel_type"] = channel_type
    if user:
        event["user"] = user
    event.update(extra)
    return event


def reaction_added(*, user: str, reaction: str, channel: str, ts: str, item_user: str = BOT_USER_ID) -> dict[str, Any]:
    return {
        "type": "reaction_added",
        "user": user,
        "reaction": reaction,
        "item_user": item_user,
        "item": {"type": "message", "channel": channel, "ts": ts},
        "event_ts": f"{time.time():.6f}",
    }


def app_home_opened(*, user: str) -> dict[str, Any]:
    return {
        "type": "app_home_opened",
        "user": user,
        "channel": "D_HOME",
        "tab": "home",
        "event_ts": f"{time.time():.6f}",
    }


def _user(user: str) -> dict[str, Any]:
    return {"id": user, "username": user.lower(), "name": user.lower(), "team_id": TEAM_ID}


def block_actions(
    *,
    user: str,
    action_id: str,
    value: str,
    channel: str | None = None,
    message_ts: str | None = None,
    thread_ts: str | None = None,
    view: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A button click on a message (channel + message_ts) or in a view (view, e.g. App Home)."""
    payload: dict[str, Any] = {
        "type": "block_actions",
        "user": _user(user),
        "api_app_id": API_APP_ID,
        "token": "legacy-verification-token",
        "trigger_id": f"{next(_ids)}.trigger",
        "team": {"id": TEAM_ID, "domain": "test"},
        "actions": [
            {
                "type": "button",
                "action_id": action_id,
                "block_id": "blk",
                "value": value,
                "text": {"type": "plain_text", "text": action_id},
                "action_ts": f"{time.time():.6f}",
            }
        ],
    }
    if view is not None:
        payload["container"] = {"type": "view", "view_id": view.get("id", "V_HOME")}
        payload["view"] = view
    else:
        payload["container"] = {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": channel,
            "is_ephemeral": False,
            **({"thread_ts": thread_ts} if thread_ts else {}),
        }
        payload["channel"] = {"id": channel, "name": "general"}
        payload["message"] = {"type": "message", "ts": message_ts, "thread_ts": thread_ts, "bot_id": "B_BOT"}
    return payload


def view_submission(*, user: str, view: dict[str, Any], values: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Submitting `view` (as the bot opened it) with the input `values` ({block_id: {action_id: {...}}})."""
    submitted = {**view, "id": view.get("id", "V_MODAL"), "state": {"values": values}}
    return {
        "type": "view_submission",
        "team": {"id": TEAM_ID, "domain": "test"},
        "user": _user(user),
        "api_app_id": API_APP_ID,
        "token": "legacy-verification-token",
        "trigger_id": f"{next(_ids)}.trigger",
        "view": submitted,
        "response_urls": [],
    }


def message_shortcut(*, user: str, callback_id: str, channel: str, message_ts: str, text: str = "") -> dict[str, Any]:
    return {
        "type": "message_action",
        "token": "legacy-verification-token",
        "action_ts": f"{time.time():.6f}",
        "team": {"id": TEAM_ID, "domain": "test"},
        "user": _user(user),
        "channel": {"id": channel, "name": "general"},
        "callback_id": callback_id,
        "trigger_id": f"{next(_ids)}.trigger",
        "message_ts": message_ts,
        "message": {"type": "message", "user": BOT_USER_ID, "bot_id": "B_BOT", "text": text, "ts": message_ts},
    }


def slash_command(*, user: str, text: str, response_url: str, channel: str = "C_GENERAL") -> dict[str, str]:
    return {
        "token": "legacy-verification-token",
        "team_id": TEAM_ID,
        "team_domain": "test",
        "channel_id": channel,
        "channel_name": "general",
        "user_id": user,
        "user_name": user.lower(),
        "command": "/tuneloop",
        "text": text,
        "api_app_id": API_APP_ID,
        "response_url": response_url,
        "trigger_id": f"{next(_ids)}.trigger",
    }


class SlackSender:
    """Posts signed requests to an app's /slack/events, as Slack does."""

    def __init__(self, base_url: str, *, secret: str = SIGNING_SECRET, timeout_s: float = 30) -> None:
        self.url = f"{base_url}/slack/events"
        self.secret = secret
        self.http = httpx.Client(timeout=timeout_s)

    def close(self) -> None:
        self.http.close()

    def post(
        self, body: str, *, content_type: str, headers: dict[str, str] | None = None, timestamp: int | None = None
    ) -> httpx.Response:
        signed = sign(body, secret=self.secret, timestamp=timestamp)
        return self.http.post(
            self.url, content=body, headers={"Content-Type": content_type, **signed, **(headers or {})}
        )

    def event(self, callback: dict[str, Any], *, retry_num: int | None = None) -> httpx.Response:
        headers = {"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": "http_timeout"} if retry_num else None
        return self.post(json.dumps(callback), content_type="application/json", headers=headers)

    def interactive(self, payload: dict[str, Any]) -> httpx.Response:
        body = urlencode({"payload": json.dumps(payload)})
        return self.post(body, content_type="application/x-www-form-urlencoded")

    def command(self, form: dict[str, str]) -> httpx.Response:
        return self.post(urlencode(form), content_type="application/x-www-form-urlencoded")
