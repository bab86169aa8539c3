"""Bad input at Slack's edge: /slack/events answers 2xx or 4xx, never 5xx, and users get a kind message.

Every request here is correctly signed: these are the payloads a bug, a replay tool or a changed Slack
could send, not forgeries (test_questions.py covers those).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import urlencode

import pytest

from bot.views import CORRECTION_INPUT_ACTION, CORRECTION_INPUT_BLOCK, CORRECTION_MODAL, INPUT_CHARS
from store import audit as audit_repo
from store import feedback as feedback_repo
from store.db import session_scope
from tests.bot.conftest import ADMIN, EMPLOYEE, seed_answer
from tests.bot.slack_requests import SIGNING_SECRET, SlackSender, event_callback, slash_command, view_submission
from tests.bot.slack_stub import RESPONSE_URL_METHOD, SlackStub
from tests.conftest import RunningService

FORM = "application/x-www-form-urlencoded"
MODAL = {"type": "modal", "callback_id": CORRECTION_MODAL}


def interactive(payload: object) -> str:
    return urlencode({"payload": json.dumps(payload)})


def submission_missing(*fields: str) -> str:
    payload = view_submission(user=EMPLOYEE, view={**MODAL, "private_metadata": "{}"}, values={})
    for name in fields:
        payload.pop(name, None)
    return interactive(payload)


MALFORMED = {
    "form payload is not JSON": ("payload={not-json", FORM),
    "form payload is a list": (interactive([1, 2]), FORM),
    "form payload is a string": (interactive("hello"), FORM),
    "form payload is percent-encoded junk": ("payload=%FF%FE", FORM),
    "JSON body is not JSON": ("{not-json", "application/json"),
    "JSON body is a list": ("[1]", "application/json"),
    "view_submission without a view": (submission_missing("view"), FORM),
    "view_submission without a user": (submission_missing("user"), FORM),
    "view_submission without a view type": (
        interactive(
            {**view_submission(user=EMPLOYEE, view=MODAL, values={}), "view": {"callback_id": CORRECTION_MODAL}}
        ),
        FORM,
    ),
    "view_submission of nothing but its type": (interactive({"type": "view_submission"}), FORM),
    "block_actions without actions": (
        interactive({"type": "block_actions", "user": {"id": EMPLOYEE}, "trigger_id": "1.t"}),
        FORM,
    ),
    "block_actions with a string for actions": (
        interactive({"type": "block_actions", "user": {"id": EMPLOYEE}, "trigger_id": "1.t", "actions": "vote_up"}),
        FORM,
    ),
    "event_callback with a string event": (
        json.dumps(event_callback({"type": "x"}) | {"event": "x"}),
        "application/json",
    ),
    "event_callback with a number event": (
        json.dumps(event_callback({"type": "x"}) | {"event": 5}),
        "application/json",
    ),
    "slash command without a user": (urlencode({"command": "/tuneloop", "text": "status"}), FORM),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_signed_requests_get_a_400_without_a_trace(
    dead_slack_service: RunningService, slack: SlackSender, slack_stub: SlackStub, name: str
) -> None:
    body, content_type = MALFORMED[name]

    response = slack.post(body, content_type=content_type)

    assert response.status_code == 400, response.text
    assert "Traceback" not in response.text and len(response.text) < 100
    slack_stub.settle(0.3)
    assert [c.method for c in slack_stub.calls if c.method != "auth.test"] == []  # no user was told anything


def test_a_body_that_is_not_utf8_gets_a_400(dead_slack_service: RunningService, slack: SlackSender) -> None:
    raw = b"payload=\xff\xfe"
    timestamp = str(int(time.time()))
    digest = hmac.new(SIGNING_SECRET.encode(), f"v0:{timestamp}:".encode() + raw, hashlib.sha256).hexdigest()
    headers = {"Content-Type": FORM, "X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": f"v0={digest}"}

    response = slack.http.post(slack.url, content=raw, headers=headers)

    assert response.status_code == 400


def test_an_unknown_payload_shape_is_bolts_unhandled_404(
    dead_slack_service: RunningService, slack: SlackSender
) -> None:
    for payload in ({"type": "something_new"}, {"unexpected": True}):
        response = slack.post(interactive(payload), content_type=FORM)
        assert response.status_code == 404
        assert "unhandled" in response.text


def test_an_unsigned_malformed_request_is_still_a_4xx(dead_slack_service: RunningService, slack: SlackSender) -> None:
    response = slack.http.post(slack.url, content="payload={not-json", headers={"Content-Type": FORM})
    assert 400 <= response.status_code < 500


def _submit(slack: SlackSender, *, metadata: str, text: str = "It is on Mars.") -> dict[str, Any]:
    values = {CORRECTION_INPUT_BLOCK: {CORRECTION_INPUT_ACTION: {"type": "plain_text_input", "value": text}}}
    started = time.monotonic()
    response = slack.interactive(
        view_submission(user=EMPLOYEE, view={**MODAL, "private_metadata": metadata}, values=values)
    )
    # Answered in the ack, not after Bolt's 3-second wait for an ack that never comes.
    assert response.status_code == 200 and time.monotonic() - started < 2.5, response.text
    reply: dict[str, Any] = response.json()
    return reply


@pytest.mark.parametrize(
    "metadata",
    ["", "not json", "[1]", '"text"', "{}", '{"interaction_id": "abc"}', '{"interaction_id": null}',
     json.dumps({"interaction_id": 10**30}), json.dumps({"interaction_id": 0}),
     json.dumps({"interaction_id": 1, "channel": {"id": "C1"}})],
)  # fmt: skip
def test_a_correction_form_with_unreadable_metadata_gets_a_kind_message(
    dead_slack_service: RunningService, slack: SlackSender, slack_stub: SlackStub, metadata: str
) -> None:
    reply = _submit(slack, metadata=metadata)

    assert reply["response_action"] == "errors"
    message = reply["errors"][CORRECTION_INPUT_BLOCK]
    assert "Close it" in message and "Correct this answer" in message
    slack_stub.settle(0.3)
    assert slack_stub.calls_to("chat.postMessage") == [] and slack_stub.calls_to("chat.postEphemeral") == []


def test_an_oversized_correction_gets_a_kind_message_and_is_not_stored(
    dead_slack_service: RunningService, slack: SlackSender, slack_stub: SlackStub
) -> None:
    services = dead_slack_service.service.services
    seeded = seed_answer(services, slack_stub)
    metadata = json.dumps({"interaction_id": seeded.interaction_id, "channel": None, "thread_ts": None})

    reply = _submit(slack, metadata=metadata, text="x" * (INPUT_CHARS + 1))

    assert reply["response_action"] == "errors"
    assert f"the limit is {INPUT_CHARS:,}" in reply["errors"][CORRECTION_INPUT_BLOCK]
    with session_scope(services.engine) as session:
        assert feedback_repo.list_corrections(session=session) == []


@pytest.mark.parametrize(
    ("user", "text", "expected"),
    [
        (ADMIN, "promote " + "v" * 33, "not a version name"),
        (ADMIN, "promote v1;drop", "not a version name"),
        (ADMIN, "rollback ../../etc", "not a version name"),
        (EMPLOYEE, "promote " + "v" * 40, "not a version name"),
        (ADMIN, "promote " + "x" * 300, "characters"),
        (EMPLOYEE, "x" * 5000, "characters"),
    ],
)
def test_oversized_or_odd_command_arguments_get_a_usage_message(
    dead_slack_service: RunningService, slack: SlackSender, slack_stub: SlackStub, user: str, text: str, expected: str
) -> None:
    url = slack_stub.response_url("cmd")

    response = slack.command(slash_command(user=user, text=text, response_url=url))

    assert response.status_code == 200
    assert expected in response.text and len(response.text) < 1000
    slack_stub.settle(0.5)
    assert slack_stub.calls_to(RESPONSE_URL_METHOD) == []  # nothing was looked up, so nothing follows
    with session_scope(dead_slack_service.service.services.engine) as session:
        assert audit_repo.list_audit(session=session) == []
