"""A local stand-in for Slack's Web API: a real HTTP server in a thread that answers the methods the bot
calls with Slack-shaped JSON and records every call (as Bolt's own test suite does).

It also keeps the messages posted to it, per channel, so that `conversations.replies` returns a thread as
Slack would (the bot's answers included), and it serves response URLs (`stub.response_url(...)`).

Slack's chat streaming methods (chat.startStream, chat.appendStream, chat.stopStream) build a message as Slack
does: the markdown of every call in order, then the blocks given to chat.stopStream. Each call is recorded with
the time the stub received it, so that a test can tell what was visible when. `stub.errors[method] = code` makes a
method fail ({"ok": false, "error": code}); `stub.rate_limit(method, ...)` answers HTTP 429 with Retry-After.

    stub = SlackStub().start()
    settings.slack.api_url = stub.api_url
    ... send a signed event to the app ...
    call = stub.wait_for_call("chat.update", lambda c: "Paris" in c.args.get("text", ""))
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

BOT_USER_ID = "U_BOT"
BOT_ID = "B_BOT"
TEAM_ID = "T_TEST"
RESPONSE_URL_METHOD = "response_url"
ANSWER_BLOCK_ID = "tuneloop_answer_actions"  # bot.views.ANSWER_ACTIONS_BLOCK; the stub stays free of the bot


@dataclass
class Call:
    method: str  # a Web API method ("chat.postMessage"), or "response_url"
    args: dict[str, Any]
    token: str | None = None
    path: str = ""
    at: float = field(default_factory=time.monotonic)  # when the stub received it
    status: int = 200  # the HTTP status it was answered with (429 when rate-limited)


@dataclass
class StubMessage:
    channel: str
    ts: str
    text: str
    user: str | None = None
    bot_id: str | None = None
    thread_ts: str | None = None
    blocks: list[dict[str, Any]] = field(default_factory=list)
    streaming: bool = False  # started with chat.startStream and not yet stopped
    created_by: str | None = None  # the Web API method that posted it; None for a message a test put there

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"type": "message", "ts": self.ts, "text": self.text}
        if self.user:
            data["user"] = self.user
        if self.bot_id:
            data["bot_id"] = self.bot_id
        if self.thread_ts:
            data["thread_ts"] = self.thread_ts
        if self.blocks:
            data["blocks"] = self.blocks
        return data


class SlackStub:
    def __init__(self, *, bot_user_id: str = BOT_USER_ID, bot_id: str = BOT_ID, team_id: str = TEAM_ID) -> None:
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.team_id = team_id
        self.calls: list[Call] = []
        self.messages: dict[str, list[StubMessage]] = {}
        # method -> Slack error code: the next calls of that method fail with {"ok": false, "error": code}.
        self.errors: dict[str, str] = {}
        # method -> (Retry-After seconds, which calls): those calls are answered HTTP 429 {"error": "ratelimited"}.
        self.rate_limits: dict[str, tuple[int, Callable[[dict[str, Any]], bool]]] = {}
        # What apps.connections.open hands out: the WebSocket URL of a Socket Mode test server.
        self.socket_mode_url: str | None = None
        self._changed = threading.Condition()
        self._seconds = int(time.time())
        self._counter = itertools.count(1)
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                stub._handle(self)

            def do_POST(self) -> None:
                stub._handle(self)

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    # --- lifecycle -------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    def response_url(self, name: str = "cmd") -> str:
        return f"{self.url}/response/{name}"

    def start(self) -> SlackStub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def rate_limit(
        self, method: str, *, retry_after_s: int, where: Callable[[dict[str, Any]], bool] = lambda _args: True
    ) -> None:
        """Answer the calls of `method` that satisfy `where` with HTTP 429 and `Retry-After: retry_after_s`."""
        self.rate_limits[method] = (retry_after_s, where)

    # --- the workspace ---------------------------------------------------------------------------
    def next_ts(self) -> str:
        n = next(self._counter)
        return f"{self._seconds + n}.{n:06d}"

    def add_message(
        self,
        channel: str,
        text: str,
        *,
        user: str | None = None,
        thread_ts: str | None = None,
        bot: bool = False,
        blocks: list[dict[str, Any]] | None = None,
    ) -> str:
        """A message as Slack holds it (e.g. the user's message an event is about); returns its ts."""
        message = StubMessage(
            channel=channel,
            ts=self.next_ts(),
            text=text,
            user=self.bot_user_id if bot else user,
            bot_id=self.bot_id if bot else None,
            thread_ts=thread_ts,
            blocks=list(blocks or []),
        )
        with self._changed:
            self.messages.setdefault(channel, []).append(message)
        return message.ts

    def message(self, channel: str, ts: str) -> StubMessage | None:
        """A copy of the message as it is now."""
        with self._changed:
            found = next((m for m in self.messages.get(channel, []) if m.ts == ts), None)
            return None if found is None else dataclasses.replace(found, blocks=list(found.blocks))

    def _stored(self, channel: str, ts: str) -> StubMessage | None:
        with self._changed:
            return next((m for m in self.messages.get(channel, []) if m.ts == ts), None)

    def thread(self, channel: str, thread_ts: str) -> list[StubMessage]:
        with self._changed:
            return [m for m in self.messages.get(channel, []) if m.ts == thread_ts or m.thread_ts == thread_ts]

    # --- what the bot did ------------------------------------------------------------------------
    def calls_to(self, method: str) -> list[Call]:
        with self._changed:
            return [c for c in self.calls if c.method == method]

    def wait_for(self, condition: Callable[[list[Call]], Any], *, timeout: float = 30.0) -> Any:
        """Wait until `condition(calls)` is truthy and return it; calls are recorded before they are answered."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                result = condition(list(self.calls))
                if result:
                    return result
                left = deadline - time.monotonic()
                if left <= 0:
                    methods = [c.method for c in self.calls]
                    raise AssertionError(f"condition not met in {timeout}s; calls so far: {methods}")
                self._changed.wait(left)

    def wait_for_call(
        self, method: str, where: Callable[[Call], bool] = lambda _c: True, *, count: int = 1, timeout: float = 30.0
    ) -> Call:
        """The `count`-th call of `method` that satisfies `where`."""

        def found(calls: list[Call]) -> Call | None:
            matching = [c for c in calls if c.method == method and where(c)]
            return matching[count - 1] if len(matching) >= count else None

        result: Call = self.wait_for(found, timeout=timeout)
        return result

    def wait_for_answer(
        self, channel: str, thread_ts: str, *, count: int = 1, timeout: float = 300.0
    ) -> tuple[Call, StubMessage]:
        """The `count`-th finished answer in a thread: the call that gave it its vote buttons (a chat.stopStream,
        or a chat.update), and the message as Slack holds it after that call."""

        def is_answer(call: Call) -> bool:
            blocks = call.args.get("blocks") or []
            if call.method not in ("chat.update", "chat.stopStream") or call.status != 200:
                return False
            if call.args.get("channel") != channel or not any(b.get("block_id") == ANSWER_BLOCK_ID for b in blocks):
                return False
            posted = self.message(channel, str(call.args.get("ts")))
            return posted is not None and posted.thread_ts == thread_ts

        def found(calls: list[Call]) -> Call | None:
            matching = [c for c in calls if is_answer(c)]
            return matching[count - 1] if len(matching) >= count else None

        call: Call = self.wait_for(found, timeout=timeout)
        message = self.message(channel, str(call.args["ts"]))
        assert message is not None
        return call, message

    def settle(self, seconds: float = 1.0) -> list[Call]:
        """Wait until no call arrived for `seconds` (to assert that something did NOT happen), return the calls."""
        with self._changed:
            seen = len(self.calls)
            while True:
                self._changed.wait(seconds)
                if len(self.calls) == seen:
                    return list(self.calls)
                seen = len(self.calls)

    # --- the server ------------------------------------------------------------------------------
    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(request.path)
        length = int(request.headers.get("Content-Length") or 0)
        raw = request.rfile.read(length).decode() if length else ""
        args: dict[str, Any] = dict(parse_qsl(parts.query))
        if raw:
            if "json" in (request.headers.get("Content-Type") or ""):
                args.update(json.loads(raw))
            else:
                args.update(dict(parse_qsl(raw)))
        for key in ("blocks", "view", "attachments"):
            if isinstance(args.get(key), str):
                args[key] = json.loads(args[key])
        token = (request.headers.get("Authorization") or "").removeprefix("Bearer ") or args.get("token")
        headers: dict[str, str] = {}
        if parts.path.startswith("/response/"):
            call = Call(RESPONSE_URL_METHOD, args, None, parts.path)
            body: Any = "ok"
        else:
            method = parts.path.removeprefix("/api/")
            call = Call(method, args, token, parts.path)
            limit = self.rate_limits.get(method)
            if limit is not None and limit[1](args):
                call.status = 429
                headers["Retry-After"] = str(limit[0])
                body = {"ok": False, "error": "ratelimited"}
            else:
                body = self._answer(method, args)
        with self._changed:
            self.calls.append(call)
            self._changed.notify_all()
        payload = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        request.send_response(call.status)
        for name, value in headers.items():
            request.send_header(name, value)
        request.send_header("Content-Type", "text/plain" if isinstance(body, str) else "application/json")
        request.send_header("Content-Length", str(len(payload)))
        request.end_headers()
        request.wfile.write(payload)

    def _answer(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        if method in self.errors:
            return {"ok": False, "error": self.errors[method]}
        if method == "auth.test":
            return {
                "ok": True,
                "url": "https://tuneloop-test.slack.com/",
                "team": "Test",
                "user": "tuneloop",
                "team_id": self.team_id,
                "user_id": self.bot_user_id,
                "bot_id": self.bot_id,
                "is_enterprise_install": False,
            }
        if method == "chat.postMessage":
            message = StubMessage(
                channel=str(args["channel"]),
                ts=self.next_ts(),
                text=str(args.get("text") or ""),
                user=self.bot_user_id,
                bot_id=self.bot_id,
                thread_ts=args.get("thread_ts"),
                blocks=list(args.get("blocks") or []),
                created_by=method,
            )
            with self._changed:
                self.messages.setdefault(message.channel, []).append(message)
            return {"ok": True, "channel": message.channel, "ts": message.ts, "message": message.to_json()}
        if method == "chat.update":
            found = self._stored(str(args["channel"]), str(args["ts"]))
            if found is None:
                return {"ok": False, "error": "message_not_found"}
            with self._changed:
                found.text = str(args.get("text") or "")
                found.blocks = list(args.get("blocks") or [])
            return {"ok": True, "channel": found.channel, "ts": found.ts, "text": found.text}
        if method in ("chat.startStream", "chat.appendStream", "chat.stopStream"):
            return self._stream(method, args)
        if method == "chat.postEphemeral":
            return {"ok": True, "message_ts": self.next_ts()}
        if method == "conversations.replies":
            thread = self.thread(str(args["channel"]), str(args["ts"]))
            return {"ok": True, "messages": [m.to_json() for m in thread], "has_more": False}
        if method in ("views.open", "views.publish", "views.update"):
            view = dict(args.get("view") or {})
            return {"ok": True, "view": {**view, "id": f"V{next(self._counter):06d}"}}
        if method == "apps.connections.open":
            if self.socket_mode_url is None:
                return {"ok": False, "error": "invalid_auth"}
            return {"ok": True, "url": self.socket_mode_url}
        if method == "users.info":
            return {"ok": True, "user": {"id": args.get("user"), "name": str(args.get("user", "")).lower()}}
        return {"ok": True}

    def _stream(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        """Slack's chat streaming methods: a message that grows by each call's markdown until it is stopped."""
        channel = str(args.get("channel") or "")
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        text = str(args.get("markdown_text") or "")
        for chunk in args.get("chunks") or []:
            if chunk.get("type") == "markdown_text":
                text += str(chunk.get("text") or "")
        if method == "chat.startStream":
            if not args.get("thread_ts"):
                return {"ok": False, "error": "invalid_arguments"}  # streamed messages reply to a user's request
            # Outside DMs Slack needs to know who the stream is for.
            if not channel.startswith("D") and not (args.get("recipient_user_id") and args.get("recipient_team_id")):
                return {"ok": False, "error": "invalid_arguments"}
            message = StubMessage(
                channel=channel,
                ts=self.next_ts(),
                text=text,
                user=self.bot_user_id,
                bot_id=self.bot_id,
                thread_ts=str(args["thread_ts"]),
                blocks=[{"type": "markdown", "text": text}],
                streaming=True,
                created_by=method,
            )
            with self._changed:
                self.messages.setdefault(channel, []).append(message)
            return {"ok": True, "channel": channel, "ts": message.ts}
        found = self._stored(channel, str(args.get("ts") or ""))
        if found is None:
            return {"ok": False, "error": "message_not_found"}
        with self._changed:
            if not found.streaming:
                return {"ok": False, "error": "message_not_in_streaming_state"}
            found.text += text
            found.blocks = [{"type": "markdown", "text": found.text}]
            if method == "chat.stopStream":
                found.streaming = False
                found.blocks += list(args.get("blocks") or [])
            data = found.to_json()
        if method == "chat.stopStream":
            return {"ok": True, "channel": channel, "ts": found.ts, "message": data}
        return {"ok": True, "channel": channel, "ts": found.ts}
