"""Questions over Slack with the model down or the input unusable, answering once, and request verification.

No vLLM here: the model URL points at a port with nothing listening. The live answers are in test_live.py.
"""

from __future__ import annotations

import json
import time

from bot import views
from store import interactions as interaction_repo
from store.db import session_scope
from store.models import Interaction
from tests.bot.conftest import CHANNEL, DM, EMPLOYEE, seed_answer
from tests.bot.slack_requests import SIGNING_SECRET, SlackSender, app_mention, event_callback, message, sign
from tests.bot.slack_stub import Call, SlackStub, StubMessage
from tests.conftest import RunningService

IN_PROGRESS = [views.thinking_blocks()[-1], views.streaming_blocks("…")[-1]]  # a placeholder's, a partial's end


def wait_for_reply(stub: SlackStub, *, channel: str, thread_ts: str) -> StubMessage:
    """The bot's finished reply in the thread, as Slack holds it: a stream the bot stopped, a placeholder's last
    edit, or a message posted whole (a failure before any word was shown)."""

    def finished(_calls: list[Call]) -> StubMessage | None:
        for posted in stub.thread(channel, thread_ts):
            done = not posted.streaming and posted.blocks and posted.blocks[-1] not in IN_PROGRESS
            if posted.created_by is not None and done:
                return posted
        return None

    reply: StubMessage = stub.wait_for(finished)
    return reply


def replies_in(stub: SlackStub, thread_ts: str) -> list[Call]:
    """The bot's messages started in the thread: posted whole, or streamed."""
    started = ("chat.postMessage", "chat.startStream")
    return [c for c in stub.calls if c.method in started and c.args.get("thread_ts") == thread_ts]


def stored(service: RunningService, channel: str, message_ts: str, *, timeout_s: float = 10.0) -> Interaction:
    """The interaction a reply belongs to (a failure posted whole is linked to it just after it is posted)."""
    deadline = time.monotonic() + timeout_s
    while True:
        with session_scope(service.service.services.engine) as session:
            found = interaction_repo.find_by_message(session=session, channel=channel, message_ts=message_ts)
        if found is not None or time.monotonic() > deadline:
            break
        time.sleep(0.05)  # polling the store for the link the bot writes after posting
    assert found is not None
    return found


def mention(stub: SlackStub, slack: SlackSender, text: str, *, thread_ts: str | None = None) -> str:
    ts = stub.add_message(CHANNEL, text, user=EMPLOYEE, thread_ts=thread_ts)
    event = app_mention(channel=CHANNEL, user=EMPLOYEE, text=text, ts=ts, thread_ts=thread_ts)
    assert slack.event(event_callback(event)).status_code == 200
    return ts


def test_dead_model_gets_a_short_reply_and_the_question_is_saved(
    dead_slack_service: RunningService, slack: SlackSender, slack_stub: SlackStub
) -> None:
    ts = mention(slack_stub, slack, "<@U_BOT> where is the office?")

    reply = wait_for_reply(slack_stub, channel=CHANNEL, thread_ts=ts)
    text = reply.text
    assert "model is unavailable" in text and "question was saved" in text
    assert "Traceback" not in text and len(text) < 200
    interaction = stored(dead_slack_service, CHANNEL, reply.ts)
    assert interaction.question == "where is the office?"
    assert interaction.status == "failed"
    assert interaction.thread_ts == ts
    assert f"ref {interaction.id}" in text


def test_an_empty_mention_gets_a_short_reply(
    dead_slack_service: RunningService, slack: SlackSender, slack_stub: SlackStub
) -> None:
    ts = mention(slack_stub, slack, "<@U_BOT>  ")

    text = wait_for_reply(slack_stub, channel=CHANNEL, thread_ts=ts).text
    assert "empty" in text and "Write a question" in text


def test_an_oversized_message_gets_a_short_reply_and_is_kept_bounded(
    dead_slack_service: RunningService, slack: SlackSender, slack_stub: SlackStub
) -> None:
    question = "why? " * 2000  # 10,000 characters; the limit is 4,000
    ts = mention(slack_stub, slack, f"<@U_BOT> {question}")

    reply = wait_for_reply(slack_stub, channel=CHANNEL, thread_ts=ts)
    assert "limit" in reply.text and len(reply.text) < 300
    interaction = stored(dead_slack_service, CHANNEL, reply.ts)
    assert interaction.question == question.strip()[:4000]  # recorded, cut at the limit
    assert interaction.status == "failed"


def test_a_direct_message_is_answered_in_its_thread(
    dead_slack_service: RunningService, slack: SlackSender, slack_stub: SlackStub
) -> None:
    ts = slack_stub.add_message(DM, "where is the office?", user=EMPLOYEE)
    slack.event(event_callback(message(channel=DM, user=EMPLOYEE, text="where is the office?", ts=ts)))

    assert "model is unavailable" in wait_for_reply(slack_stub, channel=DM, thread_ts=ts).text


def test_a_slack_retry_gets_no_second_answer(
    dead_slack_service: RunningService, slack: SlackSender, slack_stub: SlackStub
) -> None:
    ts = slack_stub.add_message(CHANNEL, "<@U_BOT> hello?", user=EMPLOYEE)
    callback = event_callback(app_mention(channel=CHANNEL, user=EMPLOYEE, text="<@U_BOT> hello?", ts=ts))
    assert slack.event(callback).status_code == 200
    wait_for_reply(slack_stub, channel=CHANNEL, thread_ts=ts)

    for retry in (1, 2):
        assert slack.event(callback, retry_num=retry).status_code == 200
    slack_stub.settle()
    assert len(replies_in(slack_stub, ts)) == 1


def test_a_redelivered_event_id_gets_no_second_answer(
    dead_slack_service: RunningService, slack: SlackSender, slack_stub: SlackStub
) -> None:
    """Socket Mode loses the retry headers: the event id alone must be enough, even when both arrive at once."""
    ts = slack_stub.add_message(CHANNEL, "<@U_BOT> hello?", user=EMPLOYEE)
    callback = event_callback(app_mention(channel=CHANNEL, user=EMPLOYEE, text="<@U_BOT> hello?", ts=ts))
    assert slack.event(callback).status_code == 200
    assert slack.event(callback).status_code == 200

    wait_for_reply(slack_stub, channel=CHANNEL, thread_ts=ts)
    slack_stub.settle()
    assert len(replies_in(slack_stub, ts)) == 1


def test_app_mention_and_message_for_the_same_message_get_one_answer(
    dead_slack_service: RunningService, slack: SlackSender, slack_stub: SlackStub
) -> None:
    text = "<@U_BOT> where is the office?"
    ts = slack_stub.add_message(DM, text, user=EMPLOYEE)
    assert slack.event(event_callback(message(channel=DM, user=EMPLOYEE, text=text, ts=ts))).status_code == 200
    assert slack.event(event_callback(app_mention(channel=DM, user=EMPLOYEE, text=text, ts=ts))).status_code == 200

    wait_for_reply(slack_stub, channel=DM, thread_ts=ts)
    slack_stub.settle()
    assert len(replies_in(slack_stub, ts)) == 1
    with session_scope(dead_slack_service.service.services.engine) as session:
        assert len(interaction_repo.list_interactions(session=session)) == 1


def test_bot_messages_edits_and_plain_channel_messages_are_not_answered(
    dead_slack_service: RunningService, slack: SlackSender, slack_stub: SlackStub
) -> None:
    events = [
        # The bot's own message, and another bot's.
        message(channel=DM, user="U_BOT", text="an answer", ts=slack_stub.next_ts(), bot_id="B_BOT"),
        message(channel=DM, user=None, text="from a bot", ts=slack_stub.next_ts(), subtype="bot_message", bot_id="B2"),
        # An edit, as Slack reports the bot's own chat.update and a user's edit.
        message(
            channel=DM,
            user=None,
            text="",
            ts=slack_stub.next_ts(),
            subtype="message_changed",
            message={"type": "message", "user": EMPLOYEE, "text": "edited", "ts": "1.000001"},
        ),
        # A channel message without a mention.
        message(channel=CHANNEL, user=EMPLOYEE, text="lunch?", ts=slack_stub.next_ts(), channel_type="channel"),
    ]
    for event in events:
        assert slack.event(event_callback(event)).status_code == 200

    calls = slack_stub.settle()
    assert [c for c in calls if c.method.startswith("chat.")] == []


def test_a_thread_follow_up_sends_the_thread_as_context(
    dead_slack_service: RunningService, slack: SlackSender, slack_stub: SlackStub
) -> None:
    services = dead_slack_service.service.services
    root_ts = seed_answer(services, slack_stub, question="Who runs IT?", answer="Dana runs IT.").question_ts
    # A placeholder or an error reply of the bot is not part of the conversation.
    slack_stub.add_message(CHANNEL, "Thinking…", thread_ts=root_ts, bot=True)

    mention(slack_stub, slack, "<@U_BOT> and what is her email?", thread_ts=root_ts)

    replies = slack_stub.wait_for_call("conversations.replies")
    assert replies.args["channel"] == CHANNEL and replies.args["ts"] == root_ts
    reply = wait_for_reply(slack_stub, channel=CHANNEL, thread_ts=root_ts)
    interaction = stored(dead_slack_service, CHANNEL, reply.ts)
    assert interaction.question == "and what is her email?"
    assert interaction.thread_ts == root_ts
    assert interaction.context == [
        {"role": "user", "content": "Who runs IT?"},
        {"role": "assistant", "content": "Dana runs IT."},
    ]


def _raw_post(service: RunningService, body: str, headers: dict[str, str]) -> int:
    import httpx

    response = httpx.post(
        f"{service.url}/slack/events", content=body, headers={"Content-Type": "application/json", **headers}
    )
    return response.status_code


def test_a_forged_signature_and_a_stale_timestamp_get_401(
    dead_slack_service: RunningService, slack_stub: SlackStub
) -> None:
    ts = slack_stub.add_message(CHANNEL, "<@U_BOT> hi", user=EMPLOYEE)
    body = json.dumps(event_callback(app_mention(channel=CHANNEL, user=EMPLOYEE, text="<@U_BOT> hi", ts=ts)))

    assert _raw_post(dead_slack_service, body, sign(body, secret="not-the-secret")) == 401
    assert _raw_post(dead_slack_service, body, sign(body, timestamp=int(time.time()) - 10 * 60)) == 401
    assert _raw_post(dead_slack_service, body, {}) == 401
    assert _raw_post(dead_slack_service, body, sign(body, secret=SIGNING_SECRET)) == 200
    wait_for_reply(slack_stub, channel=CHANNEL, thread_ts=ts)
    assert len(replies_in(slack_stub, ts)) == 1
