"""Fixtures for the Slack edge: the Web API stand-in, the service with Slack on, and a signed-request sender.

`dead_slack_service` points the model at a port with nothing listening: no vLLM, fast, for everything
whose answer text does not matter. `live_slack_service` uses the session's real vLLM (slow tests).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bot.views import answer_blocks
from serving.api.deps import Services
from store import interactions as interaction_repo
from store.db import session_scope
from tests.bot.slack_requests import SIGNING_SECRET, SlackSender
from tests.bot.slack_stub import SlackStub
from tests.conftest import ADAPTER_ONLY, RunningService, free_port, make_settings
from tuneloop.settings import Settings

REVIEWER = "U_REVIEWER"
ADMIN = "U_ADMIN"
EMPLOYEE = "U_EMPLOYEE"
CHANNEL = "C_GENERAL"
DM = "D_EMPLOYEE"


def slack_settings(
    tmp_path: Path, *, stub: SlackStub, base_model_dir: Path, vllm_url: str, **overrides: object
) -> Settings:
    return make_settings(
        tmp_path,
        base_model_dir=base_model_dir,
        vllm_url=vllm_url,
        slack={"api_url": stub.api_url, "bot_token": "xoxb-test", "signing_secret": SIGNING_SECRET},
        **overrides,
    )


@pytest.fixture
def slack_stub() -> Iterator[SlackStub]:
    stub = SlackStub().start()
    yield stub
    stub.stop()


@pytest.fixture
def dead_slack_service(tmp_path: Path, slack_stub: SlackStub) -> Iterator[RunningService]:
    settings = slack_settings(
        tmp_path, stub=slack_stub, base_model_dir=tmp_path / "no-model", vllm_url=f"http://127.0.0.1:{free_port()}"
    )
    running = RunningService(settings).start(wait_ready=False)
    yield running
    running.stop()


@pytest.fixture
def live_slack_service(
    tmp_path: Path, slack_stub: SlackStub, base_model_dir: Path, vllm_url: str
) -> Iterator[RunningService]:
    settings = slack_settings(tmp_path, stub=slack_stub, base_model_dir=base_model_dir, vllm_url=vllm_url)
    running = RunningService(settings).start()
    yield running
    running.stop()


@pytest.fixture
def live_slack_adapter_only_service(
    tmp_path: Path, slack_stub: SlackStub, base_model_dir: Path, vllm_url: str
) -> Iterator[RunningService]:
    settings = slack_settings(
        tmp_path, stub=slack_stub, base_model_dir=base_model_dir, vllm_url=vllm_url, **ADAPTER_ONLY
    )
    running = RunningService(settings).start()
    yield running
    running.stop()


@pytest.fixture
def live_slack_adapter_only(live_slack_adapter_only_service: RunningService) -> Iterator[SlackSender]:
    sender = SlackSender(live_slack_adapter_only_service.url)
    yield sender
    sender.close()


@pytest.fixture
def slack(dead_slack_service: RunningService) -> Iterator[SlackSender]:
    sender = SlackSender(dead_slack_service.url)
    yield sender
    sender.close()


@pytest.fixture
def live_slack(live_slack_service: RunningService) -> Iterator[SlackSender]:
    sender = SlackSender(live_slack_service.url)
    yield sender
    sender.close()


@dataclass(frozen=True)
class Seeded:
    interaction_id: int
    question_ts: str
    answer_ts: str


def seed_answer(
    services: Services,
    stub: SlackStub,
    *,
    question: str = "Where is the office?",
    answer: str = "On the moon.",
    channel: str = CHANNEL,
    user: str = EMPLOYEE,
    adapter_version: str = "base",
    memory_entry_id: int | None = None,
) -> Seeded:
    """An answered interaction whose answer is a bot message in the stub's thread, as a real answer leaves them."""
    question_ts = stub.add_message(channel, f"<@U_BOT> {question}", user=user)
    with session_scope(services.engine) as session:
        interaction = interaction_repo.create_interaction(
            session=session, user_id=user, source="slack", question=question, channel=channel, thread_ts=question_ts
        )
        assert interaction.id is not None
        interaction_repo.record_answer(
            session=session,
            interaction_id=interaction.id,
            answer=answer,
            adapter_version=adapter_version,
            latency_ms=5,
            memory_entry_id=memory_entry_id,
            memory_mode="prompt" if memory_entry_id is not None else None,
        )
        blocks = answer_blocks(text=answer, interaction_id=interaction.id, adapter_version=adapter_version)
        answer_ts = stub.add_message(channel, answer, thread_ts=question_ts, bot=True, blocks=blocks)
        interaction_repo.set_message_ts(session=session, interaction_id=interaction.id, message_ts=answer_ts)
    return Seeded(interaction_id=interaction.id, question_ts=question_ts, answer_ts=answer_ts)
