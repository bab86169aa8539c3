"""The whole loop through Slack alone, on the real stack: question -> correction in the modal ->
`/tuneloop retrain` -> the same question in other words gets the corrected fact.

Real vLLM, real TRL training, real SQLite; Slack's Web API is the local stand-in (Slack cannot be
reached from here), and every request to the bot is signed and shaped as Slack sends it.
"""

from __future__ import annotations

import pytest

from bot.views import CORRECT_OPEN, CORRECTION_INPUT_ACTION, CORRECTION_INPUT_BLOCK
from tests.bot.conftest import ADMIN, CHANNEL, EMPLOYEE, REVIEWER
from tests.bot.slack_requests import (
    SlackSender,
    app_mention,
    block_actions,
    event_callback,
    slash_command,
    view_submission,
)
from tests.bot.slack_stub import RESPONSE_URL_METHOD, SlackStub, StubMessage
from tests.conftest import RunningService

pytestmark = pytest.mark.slow

FACTS = [
    (
        "Who approves travel expenses?",
        "Travel expenses are approved by Marta Kowalski.",
        "kowalski",
        "Whose approval do I need for a business trip expense?",
    ),
    (
        "What is the address of the Berlin office?",
        "The Berlin office is at Kastanienallee 12.",
        "kastanienallee",
        "Where exactly is our office in Berlin located?",
    ),
]


def mention(stub: SlackStub, slack: SlackSender, text: str) -> tuple[str, StubMessage]:
    """@mention the bot in the channel; returns the question's ts and the bot's finished answer."""
    ts = stub.add_message(CHANNEL, f"<@U_BOT> {text}", user=EMPLOYEE)
    event = app_mention(channel=CHANNEL, user=EMPLOYEE, text=f"<@U_BOT> {text}", ts=ts)
    assert slack.event(event_callback(event)).status_code == 200
    _call, answer = stub.wait_for_answer(CHANNEL, ts, timeout=120)
    return ts, answer


def test_the_loop_through_slack_alone(
    live_slack_adapter_only_service: RunningService, live_slack_adapter_only: SlackSender, slack_stub: SlackStub
) -> None:
    # The memory of reviewed answers is off: the paraphrases are answered by what the adapter learnt.
    live_slack = live_slack_adapter_only
    # 1. Questions in a channel; the base model does not know the answers.
    for number, (question, correction, key, _paraphrase) in enumerate(FACTS, start=1):
        question_ts, answer = mention(slack_stub, live_slack, question)
        assert key not in answer.text.lower()

        # 2. A reviewer clicks "Correct this answer", and submits the modal: approved at once.
        click = block_actions(
            user=REVIEWER,
            action_id=CORRECT_OPEN,
            value=str(_interaction_id(answer)),
            channel=CHANNEL,
            message_ts=answer.ts,
            thread_ts=question_ts,
        )
        assert live_slack.interactive(click).status_code == 200
        view = slack_stub.wait_for_call("views.open", count=number).args["view"]
        values = {CORRECTION_INPUT_BLOCK: {CORRECTION_INPUT_ACTION: {"type": "plain_text_input", "value": correction}}}
        response = live_slack.interactive(view_submission(user=REVIEWER, view=view, values=values))
        assert response.status_code == 200
        assert not (response.content and response.json().get("errors"))

    # 3. An admin retrains from Slack; the bot acks at once and posts the result when the run ends.
    url = slack_stub.response_url("retrain")
    ack = live_slack.command(slash_command(user=ADMIN, text="retrain", response_url=url))
    assert ack.status_code == 200
    path = url.split(slack_stub.url, 1)[1]
    slack_stub.wait_for_call(RESPONSE_URL_METHOD, lambda c: c.path == path, count=2, timeout=1500)
    finished = [c for c in slack_stub.calls_to(RESPONSE_URL_METHOD) if c.path == path][-1]
    assert "succeeded" in finished.args["text"], finished.args["text"]

    # 4. The same questions in other words now get the corrected facts, from the new adapter.
    for _question, _correction, key, paraphrase in FACTS:
        _ts, answer = mention(slack_stub, live_slack, paraphrase)
        assert key in answer.text.lower(), f"{paraphrase!r} -> {answer.args['text']!r}"
        assert "adapter `v0001`" in answer.blocks[-1]["elements"][0]["text"]


def _interaction_id(answer: StubMessage) -> int:
    """The interaction id the answer's buttons carry."""
    for block in answer.blocks:
        for element in block.get("elements", []):
            if element.get("action_id") == CORRECT_OPEN:
                return int(element["value"])
    raise AssertionError("the answer has no 'Correct this answer' button")
