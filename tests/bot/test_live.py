"""Answers from the real model (vLLM on the CPU), streamed into the thread. Slow: needs the session's vLLM."""

from __future__ import annotations

import itertools

import pytest

from bot.views import ANSWER_ACTIONS_BLOCK, CORRECT_OPEN, VOTE_DOWN, VOTE_UP, escape
from store import interactions as interaction_repo
from store.db import session_scope
from tests.bot.conftest import CHANNEL, EMPLOYEE
from tests.bot.slack_requests import SlackSender, app_mention, event_callback
from tests.bot.slack_stub import TEAM_ID, SlackStub, StubMessage
from tests.conftest import RunningService

pytestmark = pytest.mark.slow


def ask(stub: SlackStub, slack: SlackSender, text: str, *, thread_ts: str | None = None) -> str:
    ts = stub.add_message(CHANNEL, text, user=EMPLOYEE, thread_ts=thread_ts)
    assert (
        slack.event(
            event_callback(app_mention(channel=CHANNEL, user=EMPLOYEE, text=text, ts=ts, thread_ts=thread_ts))
        ).status_code
        == 200
    )
    return ts


def final_answer(stub: SlackStub, *, thread_ts: str, count: int = 1) -> StubMessage:
    _call, message = stub.wait_for_answer(CHANNEL, thread_ts, count=count)
    return message


def test_a_mention_is_answered_in_its_thread_with_votes_correction_and_the_adapter(
    live_slack_service: RunningService, live_slack: SlackSender, slack_stub: SlackStub
) -> None:
    ts = ask(slack_stub, live_slack, "<@U_BOT> What is the capital of France?")

    answer = final_answer(slack_stub, thread_ts=ts)
    assert answer.text.strip()  # what the 135M model says is not this test's business
    blocks = answer.blocks
    actions = next(b for b in blocks if b.get("block_id") == ANSWER_ACTIONS_BLOCK)
    assert [e["action_id"] for e in actions["elements"]] == [VOTE_UP, VOTE_DOWN, CORRECT_OPEN]
    footer = blocks[-1]
    assert footer["type"] == "context" and "adapter `base`" in footer["elements"][0]["text"]

    with session_scope(live_slack_service.service.services.engine) as session:
        interaction = interaction_repo.find_by_message(session=session, channel=CHANNEL, message_ts=answer.ts)
    assert interaction is not None
    assert interaction.status == "answered" and interaction.adapter_version == "base"
    assert answer.text.strip() == escape(interaction.answer or "")
    assert interaction.question == "What is the capital of France?"
    # Streamed with Slack's methods: started with the first words, appended, stopped with the buttons.
    calls = [c for c in slack_stub.calls if c.method.startswith("chat.")]
    assert calls[0].method == "chat.startStream" and calls[0].args["thread_ts"] == ts
    assert calls[0].args["markdown_text"].strip()
    assert (calls[0].args["recipient_user_id"], calls[0].args["recipient_team_id"]) == (EMPLOYEE, TEAM_ID)
    assert calls[-1].method == "chat.stopStream" and calls[-1].args["ts"] == answer.ts
    appends = [c for c in calls if c.method == "chat.appendStream"]
    assert all(c.args["ts"] == answer.ts for c in appends)
    # After the first words, appends come at most about once a second.
    streamed = [calls[0], *appends]
    assert all(later.at - earlier.at >= 0.8 for earlier, later in itertools.pairwise(streamed))


def test_a_follow_up_in_the_thread_is_answered_with_the_thread_as_context(
    live_slack_service: RunningService, live_slack: SlackSender, slack_stub: SlackStub
) -> None:
    root = ask(slack_stub, live_slack, "<@U_BOT> What is the capital of France?")
    first = final_answer(slack_stub, thread_ts=root)

    ask(slack_stub, live_slack, "<@U_BOT> And what language do people speak there?", thread_ts=root)
    follow_up = final_answer(slack_stub, thread_ts=root, count=2)

    replies = slack_stub.wait_for_call("conversations.replies")
    assert replies.args["ts"] == root
    with session_scope(live_slack_service.service.services.engine) as session:
        interaction = interaction_repo.find_by_message(session=session, channel=CHANNEL, message_ts=follow_up.ts)
    assert interaction is not None and interaction.status == "answered"
    assert interaction.context == [
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": first.text},
    ]
    assert follow_up.text.strip()
