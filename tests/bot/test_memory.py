"""The memory of reviewed answers in Slack: the answer's footer, the correction modal's matched entry, and the
reviewers' list in App Home (edit, retire, search), over signed requests to the local Slack stand-in.

No vLLM: a question whose wording an entry holds is given the reviewed answer as is, without a model call.
"""

from __future__ import annotations

from bot.views import who
from tests.bot.conftest import CHANNEL, REVIEWER, seed_answer
from tests.bot.slack_requests import SlackSender
from tests.bot.slack_stub import SlackStub
from tests.bot.test_feedback import services_of
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
