"""Votes (buttons and reactions), corrections (button, shortcut, modal) and their review in App Home."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from sqlmodel import select

from bot.listeners.shortcuts.correct_message import CORRECT_SHORTCUT
from bot.views import CORRECT_OPEN, CORRECTION_INPUT_ACTION, CORRECTION_INPUT_BLOCK, REVIEW_APPROVE, VOTE_DOWN, VOTE_UP
from serving.api.deps import Services
from store import feedback as feedback_repo
from store.db import session_scope
from store.models import Correction, Feedback
from tests.bot.conftest import CHANNEL, EMPLOYEE, REVIEWER, Seeded, seed_answer
from tests.bot.slack_requests import (
    SlackSender,
    app_home_opened,
    block_actions,
    event_callback,
    message_shortcut,
    reaction_added,
    view_submission,
)
from tests.bot.slack_stub import Call, SlackStub
from tests.conftest import RunningService


def services_of(service: RunningService) -> Services:
    return service.service.services


def votes(services: Services, interaction_id: int) -> dict[str, int]:
    with session_scope(services.engine) as session:
        rows = session.exec(select(Feedback).where(Feedback.interaction_id == interaction_id)).all()
    return {row.user_id: row.vote for row in rows}


def corrections(services: Services) -> list[Correction]:
    with session_scope(services.engine) as session:
        return feedback_repo.list_corrections(session=session)


def click(slack: SlackSender, seeded: Seeded, *, user: str, action_id: str) -> None:
    payload = block_actions(
        user=user,
        action_id=action_id,
        value=str(seeded.interaction_id),
        channel=CHANNEL,
        message_ts=seeded.answer_ts,
        thread_ts=seeded.question_ts,
    )
    assert slack.interactive(payload).status_code == 200


def ephemeral_to(stub: SlackStub, user: str, *, count: int = 1) -> Call:
    return stub.wait_for_call("chat.postEphemeral", lambda c: c.args["user"] == user, count=count)


def test_button_votes_and_a_later_vote_replaces_the_earlier(
    dead_slack_service: RunningService, slack: SlackSender, slack_stub: SlackStub
) -> None:
    services = services_of(dead_slack_service)
    seeded = seed_answer(services, slack_stub)

    click(slack, seeded, user=EMPLOYEE, action_id=VOTE_UP)
    first = ephemeral_to(slack_stub, EMPLOYEE)
    assert "👍" in first.args["text"] and first.args["channel"] == CHANNEL
    assert first.args["thread_ts"] == seeded.question_ts
    assert votes(services, seeded.interaction_id) == {EMPLOYEE: 1}

    click(slack, seeded, user=EMPLOYEE, action_id=VOTE_DOWN)
    second = ephemeral_to(slack_stub, EMPLOYEE, count=2)
    assert "👎" in second.args["text"] and "replaces" in second.args["text"]
    assert votes(services, seeded.interaction_id) == {EMPLOYEE: -1}


def test_reaction_votes_count_and_replace_button_votes(
    dead_slack_service: RunningService, slack: SlackSender, slack_stub: SlackStub
) -> None:
    services = services_of(dead_slack_service)
    seeded = seed_answer(services, slack_stub)

    slack.event(event_callback(reaction_added(user=EMPLOYEE, reaction="-1", channel=CHANNEL, ts=seeded.answer_ts)))
    assert "👎" in ephemeral_to(slack_stub, EMPLOYEE).args["text"]
    assert votes(services, seeded.interaction_id) == {EMPLOYEE: -1}

    slack.event(
        event_callback(
            reaction_added(user=EMPLOYEE, reaction="thumbsup::skin-tone-3", channel=CHANNEL, ts=seeded.answer_ts)
        )
    )
    assert "replaces" in ephemeral_to(slack_stub, EMPLOYEE, count=2).args["text"]
    assert votes(services, seeded.interaction_id) == {EMPLOYEE: 1}

    click(slack, seeded, user=REVIEWER, action_id=VOTE_DOWN)
    ephemeral_to(slack_stub, REVIEWER)
    assert votes(services, seeded.interaction_id) == {EMPLOYEE: 1, REVIEWER: -1}


def test_other_reactions_and_reactions_on_other_messages_are_not_votes(
    dead_slack_service: RunningService, slack: SlackSender, slack_stub: SlackStub
) -> None:
    services = services_of(dead_slack_service)
    seeded = seed_answer(services, slack_stub)

    slack.event(event_callback(reaction_added(user=EMPLOYEE, reaction="tada", channel=CHANNEL, ts=seeded.answer_ts)))
    slack.event(event_callback(reaction_added(user=EMPLOYEE, reaction="+1", channel=CHANNEL, ts=seeded.question_ts)))

    assert slack_stub.settle() and slack_stub.calls_to("chat.postEphemeral") == []
    assert votes(services, seeded.interaction_id) == {}


def open_modal(slack: SlackSender, stub: SlackStub, seeded: Seeded, *, user: str, count: int = 1) -> dict[str, Any]:
    click(slack, seeded, user=user, action_id=CORRECT_OPEN)
    opened = stub.wait_for_call("views.open", count=count)
    view: dict[str, Any] = opened.args["view"]
    return view


def submit(slack: SlackSender, view: dict[str, Any], *, user: str, text: str) -> Any:
    values = {CORRECTION_INPUT_BLOCK: {CORRECTION_INPUT_ACTION: {"type": "plain_text_input", "value": text}}}
    response = slack.interactive(view_submission(user=user, view=view, values=values))
    assert response.status_code == 200
    return response.json() if response.content else None


def test_a_reviewers_correction_is_approved_at_once(
    dead_slack_service: RunningService, slack: SlackSender, slack_stub: SlackStub
) -> None:
    services = services_of(dead_slack_service)
    seeded = seed_answer(services, slack_stub, question="Where is the office?", answer="On the moon.")

    view = open_modal(slack, slack_stub, seeded, user=REVIEWER)
    field = next(b for b in view["blocks"] if b.get("block_id") == CORRECTION_INPUT_BLOCK)
    assert field["element"]["initial_value"] == "On the moon."
    assert "Where is the office?" in str(view["blocks"])

    assert submit(slack, view, user=REVIEWER, text="At 1 Main Street, Springfield.") is None
    confirmation = ephemeral_to(slack_stub, REVIEWER)
    assert "approved" in confirmation.args["text"]
    [correction] = corrections(services)
    assert (correction.status, correction.author_id, correction.text) == (
        "approved",
        REVIEWER,
        "At 1 Main Street, Springfield.",
    )
    assert correction.interaction_id == seeded.interaction_id


def test_empty_or_unchanged_corrections_get_errors_in_the_modal(
    dead_slack_service: RunningService, slack: SlackSender, slack_stub: SlackStub
) -> None:
    services = services_of(dead_slack_service)
    seeded = seed_answer(services, slack_stub, answer="On the moon.")
    view = open_modal(slack, slack_stub, seeded, user=EMPLOYEE)

    for text, expected in (("   ", "empty"), ("On the moon.", "same as the answer")):
        reply = submit(slack, view, user=EMPLOYEE, text=text)
        assert reply["response_action"] == "errors"
        assert expected in reply["errors"][CORRECTION_INPUT_BLOCK]
    assert corrections(services) == []


# Built from pieces, so that secret scanners on this repository do not take the fake for a real one.
GITHUB_TOKEN = "ghp_" + "Ab3dEf6hIj9lMn2pQr5tUv8xYz1BcD4fGh7K"


def test_a_correction_holding_a_credential_gets_a_field_error_and_is_neither_stored_nor_logged(
    dead_slack_service: RunningService, slack: SlackSender, slack_stub: SlackStub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, Bolt's too
    services = services_of(dead_slack_service)
    seeded = seed_answer(services, slack_stub, answer="Ask someone.")
    view = open_modal(slack, slack_stub, seeded, user=REVIEWER)

    reply = submit(slack, view, user=REVIEWER, text=f"Clone it with {GITHUB_TOKEN} and password: hunter2-Xy9!")

    assert reply["response_action"] == "errors"
    assert reply["errors"][CORRECTION_INPUT_BLOCK] == (
        "The correction contains what looks like a secret (a GitHub token, a password); it was not saved. "
        "Remove the credential; point to where it is kept (a vault, a channel) instead."
    )
    assert corrections(services) == []
    assert slack_stub.settle() and slack_stub.calls_to("chat.postEphemeral") == []
    assert caplog.records  # Bolt's and our own debug lines, none with the text
    assert GITHUB_TOKEN not in caplog.text and "hunter2" not in caplog.text


def test_a_non_reviewers_correction_waits_for_approval_in_app_home(
    dead_slack_service: RunningService, slack: SlackSender, slack_stub: SlackStub
) -> None:
    services = services_of(dead_slack_service)
    seeded = seed_answer(services, slack_stub, question="Where is the office?", answer="On the moon.")

    # The employee corrects through the message shortcut this time.
    shortcut = message_shortcut(
        user=EMPLOYEE, callback_id=CORRECT_SHORTCUT, channel=CHANNEL, message_ts=seeded.answer_ts
    )
    assert slack.interactive(shortcut).status_code == 200
    view = slack_stub.wait_for_call("views.open").args["view"]
    assert submit(slack, view, user=EMPLOYEE, text="At 1 Main Street.") is None
    assert "reviewer" in ephemeral_to(slack_stub, EMPLOYEE).args["text"]
    [pending] = corrections(services)
    assert pending.status == "pending"

    # An employee's Home shows no review queue; the reviewer's shows the correction with its context.
    slack.event(event_callback(app_home_opened(user=EMPLOYEE)))
    employee_home = slack_stub.wait_for_call("views.publish", lambda c: c.args["user_id"] == EMPLOYEE).args["view"]
    assert "waiting for review" not in str(employee_home)
    slack.event(event_callback(app_home_opened(user=REVIEWER)))
    home = slack_stub.wait_for_call("views.publish", lambda c: c.args["user_id"] == REVIEWER).args["view"]
    text = str(home["blocks"])
    assert "Where is the office?" in text and "On the moon." in text and "At 1 Main Street." in text
    assert f"<@{EMPLOYEE}>" in text
    approve = next(
        e for b in home["blocks"] if b["type"] == "actions" for e in b["elements"] if e["action_id"] == REVIEW_APPROVE
    )

    # An employee cannot approve, even with a stale view; the reviewer can.
    for user in (EMPLOYEE, REVIEWER):
        payload = block_actions(user=user, action_id=REVIEW_APPROVE, value=approve["value"], view=home)
        assert slack.interactive(payload).status_code == 200
    refused = slack_stub.wait_for_call("views.publish", lambda c: c.args["user_id"] == EMPLOYEE, count=2)
    assert "not a reviewer" in str(refused.args["view"])
    republished = slack_stub.wait_for_call("views.publish", lambda c: c.args["user_id"] == REVIEWER, count=2)
    blocks = republished.args["view"]["blocks"]
    assert "approved" in str(blocks) and "Corrections waiting for review (0)" in str(blocks)
    assert not any(str(block.get("block_id", "")).startswith("correction_") for block in blocks)
    [approved] = corrections(services)
    assert (approved.status, approved.reviewer_id) == ("approved", REVIEWER)


def test_the_shortcut_on_a_message_that_is_no_answer_says_so(
    dead_slack_service: RunningService, slack: SlackSender, slack_stub: SlackStub
) -> None:
    ts = slack_stub.add_message(CHANNEL, "just chatting", user=EMPLOYEE)
    shortcut = message_shortcut(user=EMPLOYEE, callback_id=CORRECT_SHORTCUT, channel=CHANNEL, message_ts=ts)
    assert slack.interactive(shortcut).status_code == 200

    view = slack_stub.wait_for_call("views.open").args["view"]
    assert "not one of my answers" in str(view["blocks"])
    assert "callback_id" not in view


def test_a_failure_in_a_listener_shows_a_short_message_with_a_reference_not_a_trace(
    dead_slack_service: RunningService, slack: SlackSender, slack_stub: SlackStub
) -> None:
    seeded = seed_answer(services_of(dead_slack_service), slack_stub)
    slack_stub.errors["views.open"] = "expired_trigger_id"

    click(slack, seeded, user=EMPLOYEE, action_id=CORRECT_OPEN)

    text = ephemeral_to(slack_stub, EMPLOYEE).args["text"]
    assert "went wrong" in text and "ref " in text
    assert "Traceback" not in text and "expired_trigger_id" not in text


@pytest.mark.parametrize("value", ["abc", "-1", "0", str(2**64), ""])
@pytest.mark.parametrize("action_id", [VOTE_UP, CORRECT_OPEN])
def test_a_button_with_a_damaged_value_gets_a_kind_message(
    dead_slack_service: RunningService, slack: SlackSender, slack_stub: SlackStub, action_id: str, value: str
) -> None:
    seeded = seed_answer(services_of(dead_slack_service), slack_stub)
    payload = block_actions(
        user=EMPLOYEE,
        action_id=action_id,
        value=value,
        channel=CHANNEL,
        message_ts=seeded.answer_ts,
        thread_ts=seeded.question_ts,
    )
    assert slack.interactive(payload).status_code == 200

    text = ephemeral_to(slack_stub, EMPLOYEE).args["text"]
    assert "does not point at anything" in text and "went wrong" not in text
    with session_scope(services_of(dead_slack_service).engine) as session:
        assert list(session.exec(select(Feedback)).all()) == []
