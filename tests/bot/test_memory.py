"""The memory of reviewed answers in Slack: the answer's footer, the correction modal's matched entry, and the
reviewers' list in App Home (edit, retire, search), over signed requests to the local Slack stand-in.

No vLLM: a question whose wording an entry holds is given the reviewed answer as is, without a model call.
"""

from __future__ import annotations

from typing import Any

from bot.views import CORRECT_OPEN, who
from serving.api.deps import Services
from tests.bot.conftest import CHANNEL, EMPLOYEE, REVIEWER, seed_answer
from tests.bot.slack_requests import SlackSender
from tests.bot.slack_stub import SlackStub
from tests.bot.test_feedback import click, services_of
from tests.bot.test_questions import mention, stored, wait_for_reply
from tests.conftest import RunningService

QUESTION = "How do I get a new laptop?"
ANSWER = "File a request in #it-laptops; the IT desk ships laptops within five working days."


def test_a_reviewed_answer_is_given_as_is_and_its_footer_says_who_reviewed_it(
    dead_slack_service: RunningService, slack: SlackSender, slack_stub: SlackStub
) -> None:
    services = services_of(dead_slack_service)
    seeded = seed_answer(services, slack_stub, question=QUESTION, answer="Buy one.")
    services.feedback.correct(interaction_id=seeded.interaction_id, user_id=REVIEWER, text=ANSWER)

    ts = mention(slack_stub, slack, f"<@U_BOT> {QUESTION}")

    reply = wait_for_reply(slack_stub, channel=CHANNEL, thread_ts=ts)
    assert reply.args["text"] == ANSWER
    footer = reply.args["blocks"][-1]["elements"][0]["text"]
    assert footer.startswith(f"reviewed answer by {who(REVIEWER)} on ")
    interaction = stored(dead_slack_service, CHANNEL, reply.args["ts"])
    assert f"ref {interaction.id}" in footer and "adapter" not in footer
    assert (interaction.memory_mode, interaction.status) == ("direct", "answered")


def reviewed_entry(services: Services, stub: SlackStub, *, question: str = QUESTION, answer: str = ANSWER) -> int:
    """A reviewer's correction of an answered question: it becomes an entry of the memory at once."""
    seeded = seed_answer(services, stub, question=question, answer="Buy one.")
    services.feedback.correct(interaction_id=seeded.interaction_id, user_id=REVIEWER, text=answer)
    assert services.memory is not None
    [hit] = services.memory.search(question, limit=1)
    return hit.entry_id


def open_modal_on(
    services: Services, slack: SlackSender, stub: SlackStub, *, question: str, entry_id: int, count: int = 1
) -> str:
    """The blocks of the correction modal on an answer the memory gave from `entry_id`, opened by an employee."""
    seeded = seed_answer(services, stub, question=question, answer=ANSWER, memory_entry_id=entry_id)
    click(slack, seeded, user=EMPLOYEE, action_id=CORRECT_OPEN)
    view: dict[str, Any] = stub.wait_for_call("views.open", count=count).args["view"]
    return str(view["blocks"])


def test_the_correction_modal_names_the_entry_an_answer_came_from_and_what_a_correction_does_to_it(
    dead_slack_service: RunningService, slack: SlackSender, slack_stub: SlackStub
) -> None:
    services = services_of(dead_slack_service)
    entry_id = reviewed_entry(services, slack_stub)

    # The same question: an approved correction replaces the entry's answer.
    same = open_modal_on(services, slack, slack_stub, question=QUESTION, entry_id=entry_id)
    assert f"reviewed entry #{entry_id} (“{QUESTION}”, reviewed by {who(REVIEWER)} on " in same
    assert "Your correction will replace it." in same

    # Another question the memory matched wrongly: the correction becomes its own entry; the other stays.
    other = open_modal_on(
        services, slack, slack_stub, question="How do I get a new phone number?", entry_id=entry_id, count=2
    )
    assert f"reviewed entry #{entry_id}" in other
    assert "becomes a new entry for this question; the other stays as it is." in other

    # An answer the memory did not give says nothing about entries.
    plain = seed_answer(services, slack_stub, question="Where is the office?", answer="On the moon.")
    click(slack, plain, user=EMPLOYEE, action_id=CORRECT_OPEN)
    assert "reviewed entry" not in str(slack_stub.wait_for_call("views.open", count=3).args["view"]["blocks"])
