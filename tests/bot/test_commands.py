"""/tuneloop: every subcommand as an admin and as a non-admin; refusals say why and are audited."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from store import adapters as adapter_repo
from store import audit as audit_repo
from store.db import session_scope
from store.models import AuditEvent
from tests.bot.conftest import ADMIN, EMPLOYEE, slack_settings
from tests.bot.slack_requests import SlackSender, slash_command
from tests.bot.slack_stub import RESPONSE_URL_METHOD, Call, SlackStub
from tests.conftest import RunningService, free_port


@pytest.fixture
def command(slack: SlackSender, slack_stub: SlackStub) -> Iterator[Any]:
    counter = iter(range(1, 1000))

    def run(user: str, text: str) -> tuple[str, str]:
        """Send the command; returns (the ack's text, the response URL the lazy answers go to)."""
        url = slack_stub.response_url(f"cmd{next(counter)}")
        response = slack.command(slash_command(user=user, text=text, response_url=url))
        assert response.status_code == 200
        # Bolt answers an ack with text alone as plain text (Slack shows it as an ephemeral message).
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()["text"], url
        return response.text, url

    yield run


def responses(stub: SlackStub, url: str, *, count: int = 1, timeout: float = 30) -> list[Call]:
    path = url.split(stub.url, 1)[1]
    stub.wait_for_call(RESPONSE_URL_METHOD, lambda c: c.path == path, count=count, timeout=timeout)
    return [c for c in stub.calls_to(RESPONSE_URL_METHOD) if c.path == path]


def audits(service: RunningService) -> list[AuditEvent]:
    with session_scope(service.service.services.engine) as session:
        return list(reversed(audit_repo.list_audit(session=session)))


def audited(service: RunningService, *, count: int = 1, timeout: float = 10.0) -> list[AuditEvent]:
    """The audit events once there are `count` (a refusal is acked first and audited right after the ack)."""
    deadline = time.monotonic() + timeout
    while len(events := audits(service)) < count:
        assert time.monotonic() < deadline, f"{len(events)} audit events after {timeout}s, expected {count}"
        time.sleep(0.05)  # polling the store with a deadline
    return events


@pytest.mark.parametrize("user", [EMPLOYEE, ADMIN])
def test_help_and_status_are_for_everyone(dead_slack_service: RunningService, command: Any, user: str) -> None:
    text, _ = command(user, "help")
    assert "retrain" in text and "rollback" in text
    assert command(user, "")[0] == text

    text, _ = command(user, "status")
    assert "Active adapter:* `base`" in text
    assert "no run yet" in text
    assert "New feedback since the last training:* 0" in text


def test_adapters_for_an_admin_and_an_audited_refusal_for_others(
    dead_slack_service: RunningService, command: Any
) -> None:
    with session_scope(dead_slack_service.service.services.engine) as session:
        adapter_repo.ensure_base_version(session=session)
        adapter_repo.register_version(
            session=session, version="v0001", path="/nowhere", run_id=None, metrics={"score": 0.75}
        )

    text, _ = command(ADMIN, "adapters")
    assert "`base` :white_check_mark: *active*" in text
    assert "`v0001` ready · score=0.75" in text

    text, _ = command(EMPLOYEE, "adapters")
    assert "needs an admin" in text and "v0001" not in text
    [event] = audited(dead_slack_service)
    assert (event.actor, event.action, event.outcome, event.source) == (EMPLOYEE, "adapters", "refused", "slack")


@pytest.mark.parametrize("text", ["retrain", "promote v0001", "rollback", "rollback v0001"])
def test_admin_actions_are_refused_for_others_with_the_reason_and_audited(
    dead_slack_service: RunningService, command: Any, slack_stub: SlackStub, text: str
) -> None:
    reply, _url = command(EMPLOYEE, text)
    assert "needs an admin" in reply and EMPLOYEE in reply

    [event] = audited(dead_slack_service)
    assert (event.actor, event.action, event.outcome) == (EMPLOYEE, text.split()[0], "refused")
    slack_stub.settle()
    assert slack_stub.calls_to(RESPONSE_URL_METHOD) == []


def test_promote_and_rollback_as_an_admin_report_the_outcome(
    dead_slack_service: RunningService, command: Any, slack_stub: SlackStub
) -> None:
    reply, url = command(ADMIN, "promote v0042")
    assert "Promoting `v0042`" in reply
    [result] = responses(slack_stub, url)
    assert "v0042 does not exist" in result.args["text"]

    reply, url = command(ADMIN, "rollback")
    assert "Rolling back" in reply
    [result] = responses(slack_stub, url)
    assert "no earlier version" in result.args["text"]

    reply, _ = command(ADMIN, "promote")
    assert "Usage" in reply
    outcomes = [(e.action, e.target, e.outcome) for e in audits(dead_slack_service)]
    assert outcomes == [("promote", "v0042", "failed"), ("rollback", None, "failed")]


def test_retrain_acks_at_once_and_posts_the_result_when_the_run_ends(
    dead_slack_service: RunningService, command: Any, slack_stub: SlackStub
) -> None:
    reply, url = command(ADMIN, "retrain")
    assert "Starting a tuning cycle" in reply

    started, finished = responses(slack_stub, url, count=2, timeout=120)
    assert "Run 1 started" in started.args["text"]
    assert "run 1" in finished.args["text"]
    assert any(word in finished.args["text"] for word in ("succeeded", "failed", "skipped"))
    [event] = audits(dead_slack_service)
    assert (event.actor, event.action, event.outcome, event.detail) == (ADMIN, "retrain", "ok", {"run_id": 1})


def test_an_unknown_subcommand_shows_the_help(dead_slack_service: RunningService, command: Any) -> None:
    text, _ = command(EMPLOYEE, "dance")
    assert "don't know `dance`" in text and "retrain" in text


@pytest.fixture
def queueing_slack(tmp_path: Path, slack_stub: SlackStub) -> Iterator[SlackSender]:
    settings = slack_settings(
        tmp_path,
        stub=slack_stub,
        base_model_dir=tmp_path / "no-model",
        vllm_url=f"http://127.0.0.1:{free_port()}",
        training={"runner": "worker"},
    )
    running = RunningService(settings).start(wait_ready=False)
    sender = SlackSender(running.url)
    yield sender
    sender.close()
    running.stop()


def test_retrain_on_a_queueing_service_says_the_run_waits_for_a_worker(
    queueing_slack: SlackSender, slack_stub: SlackStub
) -> None:
    url = slack_stub.response_url("queued")
    response = queueing_slack.command(slash_command(user=ADMIN, text="retrain", response_url=url))
    assert response.status_code == 200
    [queued] = responses(slack_stub, url)
    assert "Run 1 queued for a training worker" in queued.args["text"]
