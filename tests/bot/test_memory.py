"""The memory of reviewed answers in Slack: the answer's footer, the correction modal's matched entry, and the
reviewers' list in App Home (edit, retire, search), over signed requests to the local Slack stand-in.

No vLLM: a question whose wording an entry holds is given the reviewed answer as is, without a model call.
"""

from __future__ import annotations

from typing import Any

import pytest

from bot.views import (
    CORRECT_OPEN,
    MEMORY_EDIT,
    MEMORY_EDIT_ACTION,
    MEMORY_EDIT_BLOCK,
    MEMORY_EDIT_MODAL,
    MEMORY_RETIRE,
    MEMORY_SEARCH,
    who,
)
from serving.api.deps import Services
from store import memory as memory_repo
from store.audit import list_audit
from store.db import session_scope
from store.models import MemoryEntry, MemoryStatus
from tests.bot.conftest import CHANNEL, EMPLOYEE, REVIEWER, seed_answer
from tests.bot.slack_requests import SlackSender, app_home_opened, block_actions, event_callback, view_submission
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
    assert reply.text == ANSWER
    footer = reply.blocks[-1]["elements"][0]["text"]
    assert footer.startswith(f"reviewed answer by {who(REVIEWER)} on ")
    interaction = stored(dead_slack_service, CHANNEL, reply.ts)
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


def home_of(slack: SlackSender, stub: SlackStub, user: str, *, count: int = 1) -> dict[str, Any]:
    """`user`'s Home tab, published after the event or click just sent (the `count`th publish to them)."""
    call = stub.wait_for_call("views.publish", lambda c: c.args["user_id"] == user, count=count)
    view: dict[str, Any] = call.args["view"]
    return view


def button(view: dict[str, Any], action_id: str, entry_id: int) -> dict[str, Any]:
    found: dict[str, Any] = next(
        element
        for block in view["blocks"]
        if block["type"] == "actions"
        for element in block["elements"]
        if element["action_id"] == action_id and element["value"] == str(entry_id)
    )
    return found


def entry(services: Services, entry_id: int) -> MemoryEntry:
    with session_scope(services.engine) as session:
        found = memory_repo.get_entry(session=session, entry_id=entry_id)
    assert found is not None
    return found


def audit_of(services: Services, entry_id: int) -> list[tuple[str, str, str, str]]:
    with session_scope(services.engine) as session:
        events = list_audit(session=session)
    return [(e.actor, e.source, e.action, e.outcome) for e in events if e.target == f"memory:{entry_id}"]


def test_app_home_lists_reviewed_answers_to_reviewers_only(
    dead_slack_service: RunningService, slack: SlackSender, slack_stub: SlackStub
) -> None:
    services = services_of(dead_slack_service)
    entry_id = reviewed_entry(services, slack_stub)

    slack.event(event_callback(app_home_opened(user=REVIEWER)))
    home = str(home_of(slack, slack_stub, REVIEWER)["blocks"])
    assert "Reviewed answers" in home and f"“{QUESTION}”" in home and ANSWER in home
    assert f"#{entry_id} · reviewed by {who(REVIEWER)} on " in home
    assert MEMORY_EDIT in home and MEMORY_RETIRE in home and "'confirm'" in home

    slack.event(event_callback(app_home_opened(user=EMPLOYEE)))
    employee_home = str(home_of(slack, slack_stub, EMPLOYEE)["blocks"])
    assert "Reviewed answers" not in employee_home and ANSWER not in employee_home


def test_a_reviewer_retires_an_entry_from_app_home_and_it_is_audited(
    dead_slack_service: RunningService, slack: SlackSender, slack_stub: SlackStub
) -> None:
    services = services_of(dead_slack_service)
    entry_id = reviewed_entry(services, slack_stub)
    slack.event(event_callback(app_home_opened(user=REVIEWER)))
    home = home_of(slack, slack_stub, REVIEWER)

    retire = button(home, MEMORY_RETIRE, entry_id)
    payload = block_actions(user=REVIEWER, action_id=MEMORY_RETIRE, value=retire["value"], view=home)
    assert slack.interactive(payload).status_code == 200

    refreshed = str(home_of(slack, slack_stub, REVIEWER, count=2)["blocks"])
    assert f"#{entry_id} is retired" in refreshed and ANSWER not in refreshed
    assert entry(services, entry_id).status == MemoryStatus.retired
    assert audit_of(services, entry_id) == [(REVIEWER, "slack", "memory.retire", "ok")]
    assert services.memory is not None and services.memory.recall(QUESTION).hits == []


def test_a_reviewer_edits_an_entry_in_a_modal_within_bounds(
    dead_slack_service: RunningService, slack: SlackSender, slack_stub: SlackStub
) -> None:
    services = services_of(dead_slack_service)
    entry_id = reviewed_entry(services, slack_stub)
    slack.event(event_callback(app_home_opened(user=REVIEWER)))
    home = home_of(slack, slack_stub, REVIEWER)

    edit = button(home, MEMORY_EDIT, entry_id)
    edit_click = block_actions(user=REVIEWER, action_id=MEMORY_EDIT, value=edit["value"], view=home)
    assert slack.interactive(edit_click).status_code == 200
    modal = slack_stub.wait_for_call("views.open").args["view"]
    field = next(b for b in modal["blocks"] if b.get("block_id") == MEMORY_EDIT_BLOCK)
    assert field["element"]["initial_value"] == ANSWER

    for text, problem in (("  ", "empty"), ("x" * 8001, "over 8,000 characters"), (ANSWER, "unchanged")):
        reply = submit_edit(slack, modal, user=REVIEWER, text=text)
        assert reply["response_action"] == "errors" and problem in reply["errors"][MEMORY_EDIT_BLOCK]
    assert entry(services, entry_id).answer == ANSWER and audit_of(services, entry_id) == []

    edited = "Ask the IT desk in #it-help; laptops ship within two working days."
    assert submit_edit(slack, modal, user=REVIEWER, text=edited) is None
    refreshed = str(home_of(slack, slack_stub, REVIEWER, count=2)["blocks"])
    assert f"#{entry_id} is edited" in refreshed and "two working days" in refreshed
    assert (entry(services, entry_id).answer, entry(services, entry_id).approved_by) == (edited, REVIEWER)
    assert audit_of(services, entry_id) == [(REVIEWER, "slack", "memory.edit", "ok")]
    assert services.memory is not None and services.memory.recall(QUESTION).hits[0].answer == edited


def submit_edit(slack: SlackSender, modal: dict[str, Any], *, user: str, text: str) -> Any:
    values = {MEMORY_EDIT_BLOCK: {MEMORY_EDIT_ACTION: {"type": "plain_text_input", "value": text}}}
    response = slack.interactive(view_submission(user=user, view=modal, values=values))
    assert response.status_code == 200
    return response.json() if response.content else None


def test_a_non_reviewers_forged_retire_or_edit_is_refused_audited_and_changes_nothing(
    dead_slack_service: RunningService, slack: SlackSender, slack_stub: SlackStub
) -> None:
    services = services_of(dead_slack_service)
    entry_id = reviewed_entry(services, slack_stub)
    forged_home = {"type": "home", "id": "V_FORGED", "blocks": []}

    payload = block_actions(user=EMPLOYEE, action_id=MEMORY_RETIRE, value=str(entry_id), view=forged_home)
    assert slack.interactive(payload).status_code == 200
    notice = str(home_of(slack, slack_stub, EMPLOYEE)["blocks"])
    assert "Only reviewers can change reviewed answers" in notice and ANSWER not in notice

    modal = {"type": "modal", "callback_id": MEMORY_EDIT_MODAL, "private_metadata": str(entry_id), "blocks": []}
    reply = submit_edit(slack, modal, user=EMPLOYEE, text="Buy one and expense it.")
    assert "Only reviewers" in reply["errors"][MEMORY_EDIT_BLOCK]

    slack_stub.settle()
    assert (entry(services, entry_id).status, entry(services, entry_id).answer) == (MemoryStatus.active, ANSWER)
    assert sorted(audit_of(services, entry_id)) == [
        (EMPLOYEE, "slack", "memory.edit", "refused"),
        (EMPLOYEE, "slack", "memory.retire", "refused"),
    ]


def test_a_reviewer_searches_reviewed_answers_by_meaning(
    dead_slack_service: RunningService, slack: SlackSender, slack_stub: SlackStub
) -> None:
    services = services_of(dead_slack_service)
    laptop = reviewed_entry(services, slack_stub)
    parking = reviewed_entry(
        services, slack_stub, question="Where can I park my car?", answer="Level -2 of the garage is ours."
    )
    home = {"type": "home", "id": "V_HOME", "blocks": []}

    search = block_actions(
        user=REVIEWER, action_id=MEMORY_SEARCH, value="requesting a new notebook computer", view=home
    )
    assert slack.interactive(search).status_code == 200

    results = str(home_of(slack, slack_stub, REVIEWER)["blocks"])
    assert f"#{laptop} · " in results and "similarity" in results
    assert f"#{parking} · " not in results
    assert "'initial_value': 'requesting a new notebook computer'" in results


@pytest.mark.parametrize("value", ["abc", "0", "²", str(2**64)])
def test_a_damaged_retire_button_gets_a_kind_message(
    dead_slack_service: RunningService, slack: SlackSender, slack_stub: SlackStub, value: str
) -> None:
    home = {"type": "home", "id": "V_HOME", "blocks": []}
    click_retire = block_actions(user=REVIEWER, action_id=MEMORY_RETIRE, value=value, view=home)
    assert slack.interactive(click_retire).status_code == 200

    dm = slack_stub.wait_for_call("chat.postMessage", lambda c: c.args["channel"] == REVIEWER)
    assert "does not point at anything" in dm.args["text"] and "went wrong" not in dm.args["text"]
