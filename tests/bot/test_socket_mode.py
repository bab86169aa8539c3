"""Socket Mode: with an app-level token the bot connects out over a WebSocket instead of serving HTTP.

Slack's Socket Mode endpoint cannot be reached from here: a local aiohttp WebSocket server plays it,
speaking Slack's envelope protocol (hello, events_api envelopes, acks by envelope_id).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import WSMsgType, web

from tests.bot.conftest import CHANNEL, EMPLOYEE
from tests.bot.slack_requests import app_mention, event_callback
from tests.bot.slack_stub import SlackStub
from tests.bot.test_questions import wait_for_reply
from tests.conftest import RunningService, free_port, make_settings


class SocketModeServer:
    """Accepts the bot's WebSocket, says hello, sends envelopes, and collects the bot's acks."""

    def __init__(self) -> None:
        self.port = free_port()
        self.connected = asyncio.Event()
        self.acks: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._socket: web.WebSocketResponse | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/link"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/link", self._link)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def send(self, envelope: dict[str, Any]) -> None:
        assert self._socket is not None
        await self._socket.send_str(json.dumps(envelope))

    async def _link(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse(autoping=True)
        await socket.prepare(request)
        self._socket = socket
        await socket.send_str(json.dumps({"type": "hello", "num_connections": 1}))
        self.connected.set()
        async for message in socket:
            if message.type == WSMsgType.TEXT:
                await self.acks.put(json.loads(message.data))
        return socket


@pytest.fixture
async def socket_server() -> AsyncIterator[SocketModeServer]:
    server = SocketModeServer()
    await server.start()
    yield server
    await server.stop()


async def test_events_arrive_and_are_acked_over_socket_mode(
    tmp_path: Path, slack_stub: SlackStub, socket_server: SocketModeServer
) -> None:
    slack_stub.socket_mode_url = socket_server.url
    settings = make_settings(
        tmp_path,
        base_model_dir=tmp_path / "no-model",
        vllm_url=f"http://127.0.0.1:{free_port()}",  # no model server: the reply is the "unavailable" one
        slack={"api_url": slack_stub.api_url, "bot_token": "xoxb-test", "app_token": "xapp-test"},
    )
    running = await asyncio.to_thread(RunningService(settings).start, wait_ready=False)
    try:
        await asyncio.wait_for(socket_server.connected.wait(), timeout=30)
        assert running.service.services.info["slack_mode"] == "socket mode"
        # No public endpoint in Socket Mode.
        assert (await asyncio.to_thread(httpx.post, f"{running.url}/slack/events", json={})).status_code == 404

        ts = slack_stub.add_message(CHANNEL, "<@U_BOT> Where is the office?", user=EMPLOYEE)
        event = app_mention(channel=CHANNEL, user=EMPLOYEE, text="<@U_BOT> Where is the office?", ts=ts)
        await socket_server.send(
            {
                "envelope_id": "env-1",
                "type": "events_api",
                "accepts_response_payload": False,
                "retry_attempt": 0,
                "retry_reason": "",
                "payload": event_callback(event),
            }
        )
        ack = await asyncio.wait_for(socket_server.acks.get(), timeout=30)
        assert ack["envelope_id"] == "env-1"

        # The "unavailable" reply is posted in the thread.
        reply = await asyncio.to_thread(wait_for_reply, slack_stub, channel=CHANNEL, thread_ts=ts)
        assert "unavailable" in reply.text
    finally:
        await asyncio.to_thread(running.stop)
