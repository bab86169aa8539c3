"""The admins' channel: a promotion is posted there with a Roll back button; an admin's click rolls back,
anyone else's is refused and audited; Slack being down never fails the promotion.

The model server is a port with nothing listening, and the client's adapter load and unload are stand-ins
that accept every adapter: these tests are about Slack and the audit trail, not about vLLM.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.views import ADMIN_EVENT_ACTIONS_BLOCK, ADMIN_ROLLBACK, RollbackTarget
from store import adapters as adapter_repo
from store import audit as audit_repo
from store.db import session_scope
from store.models import AuditEvent
from tests.bot.conftest import ADMIN, EMPLOYEE
from tests.bot.slack_requests import SIGNING_SECRET, SlackSender, block_actions, slash_command
from tests.bot.slack_stub import RESPONSE_URL_METHOD, Call, SlackStub
from tests.conftest import RunningService, free_port, make_settings

ADMIN_CHANNEL = "C_ADMINS"


@pytest.fixture
def service(tmp_path: Path, slack_stub: SlackStub, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningService]:
    settings = make_settings(
        tmp_path,
        base_model_dir=tmp_path / "no-model",
        vllm_url=f"http://127.0.0.1:{free_port()}",
        slack={
            "api_url": slack_stub.api_url,
            "bot_token": "xoxb-test",
            "signing_secret": SIGNING_SECRET,
            "admin_channel": ADMIN_CHANNEL,
        },
    )
    running = RunningService(settings)

    async def accept(**_kwargs: Any) -> None:
        return None

    monkeypatch.setattr(running.service.services.client, "ensure_adapter", accept)
    monkeypatch.setattr(running.service.services.client, "unload_adapter", accept)
    with session_scope(running.service.services.engine) as session:
        adapter_repo.ensure_base_version(session=session)
        for name in ("v0001", "v0002"):
            folder = tmp_path / "adapters" / name
            folder.mkdir(parents=True)
            (folder / "adapter_config.json").write_text("{}")
            adapter_repo.register_version(session=session, version=name, path=str(folder), run_id=None)
    yield running.start(wait_ready=False)
    running.stop()


@pytest.fixture
def slack(service: RunningService) -> Iterator[SlackSender]:
    sender = SlackSender(service.url)
    yield sender
    sender.close()


def promote(slack: SlackSender, stub: SlackStub, version: str) -> str:
    """`/tuneloop promote VERSION` as an admin; returns what the command answered once it was done."""
    url = stub.response_url(f"promote-{version}")
    assert slack.command(slash_command(user=ADMIN, text=f"promote {version}", response_url=url)).status_code == 200
    path = url.split(stub.url, 1)[1]
    return str(stub.wait_for_call(RESPONSE_URL_METHOD, lambda c: c.path == path).args["text"])


def posted_to_admins(stub: SlackStub, *, count: int = 1) -> Call:
    return stub.wait_for_call("chat.postMessage", lambda c: c.args.get("channel") == ADMIN_CHANNEL, count=count)


def rollback_button(call: Call) -> dict[str, Any]:
    [actions] = [b for b in call.args["blocks"] if b.get("block_id") == ADMIN_EVENT_ACTIONS_BLOCK]
    [button] = actions["elements"]
    assert button["action_id"] == ADMIN_ROLLBACK
    return dict(button)


def click(slack: SlackSender, stub: SlackStub, posted: Call, *, user: str) -> None:
    ts = _ts_of(stub, posted)
    assert ts is not None
    payload = block_actions(
        user=user,
        action_id=ADMIN_ROLLBACK,
        value=rollback_button(posted)["value"],
        channel=ADMIN_CHANNEL,
        message_ts=ts,
    )
    # Slack sends the clicked message along, blocks included.
    payload["message"].update(text=posted.args["text"], blocks=posted.args["blocks"])
    assert slack.interactive(payload).status_code == 200


def _ts_of(stub: SlackStub, posted: Call) -> str | None:
    messages = stub.messages.get(ADMIN_CHANNEL, [])
    return next((m.ts for m in messages if m.blocks == posted.args["blocks"]), None)


def active(service: RunningService) -> tuple[str, str]:
    """The active version as the registry serves it, and as the store records it."""
    services = service.service.services
    with session_scope(services.engine) as session:
        stored = adapter_repo.get_active_version(session=session)
    assert stored is not None
    return services.registry.active.version, stored.version


def audits(service: RunningService) -> list[AuditEvent]:
    with session_scope(service.service.services.engine) as session:
        return list(reversed(audit_repo.list_audit(session=session)))


def eventually(condition: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)  # polling the store, which the service writes from its own thread
    return result


def test_a_promotion_is_posted_with_a_roll_back_button_that_admins_alone_may_use(
    service: RunningService, slack: SlackSender, slack_stub: SlackStub
) -> None:
    assert "`v0001` is now the active adapter" in promote(slack, slack_stub, "v0001")
    posted = posted_to_admins(slack_stub)
    assert "`v0001` now serves" in posted.args["text"] and "U_ADMIN" in posted.args["text"]
    assert "before: `base`" in str(posted.args["blocks"])
    button = rollback_button(posted)
    assert RollbackTarget.from_value(button["value"]) == RollbackTarget(promoted="v0001", to="base")
    assert button["text"]["text"] == "Roll back to base" and "confirm" in button

    click(slack, slack_stub, posted, user=EMPLOYEE)
    refused = slack_stub.wait_for_call("chat.postEphemeral", lambda c: c.args.get("user") == EMPLOYEE)
    assert "needs an admin" in refused.args["text"]
    assert active(service) == ("v0001", "v0001")
    last = audits(service)[-1]
    assert (last.actor, last.source, last.action, last.target, last.outcome) == (
        EMPLOYEE,
        "slack",
        "rollback",
        "base",
        "refused",
    )

    click(slack, slack_stub, posted, user=ADMIN)
    updated = slack_stub.wait_for_call("chat.update", lambda c: c.args.get("channel") == ADMIN_CHANNEL)
    blocks = str(updated.args["blocks"])
    assert "rolled back to `base`" in blocks and ADMIN_ROLLBACK not in blocks  # the button is gone
    assert active(service) == ("base", "base")
    last = audits(service)[-1]
    assert (last.actor, last.source, last.action, last.target, last.outcome) == (
        ADMIN,
        "slack",
        "rollback",
        "base",
        "ok",
    )
    assert last.detail == {"active": "base", "previous": "v0001"}
    # The rollback is announced in the channel too, without a button of its own.
    announced = posted_to_admins(slack_stub, count=2)
    assert "`base` serves again" in announced.args["text"]
    assert ADMIN_ROLLBACK not in str(announced.args["blocks"])


def test_an_old_messages_button_does_not_undo_a_later_promotion(
    service: RunningService, slack: SlackSender, slack_stub: SlackStub
) -> None:
    promote(slack, slack_stub, "v0001")
    first = posted_to_admins(slack_stub)
    promote(slack, slack_stub, "v0002")
    posted_to_admins(slack_stub, count=2)

    click(slack, slack_stub, first, user=ADMIN)
    notice = slack_stub.wait_for_call("chat.postEphemeral", lambda c: c.args.get("user") == ADMIN)
    assert "`v0001` no longer serves (`v0002` does)" in notice.args["text"]
    assert active(service) == ("v0002", "v0002")
    assert [e.action for e in audits(service)] == ["promote", "promote"]


def test_when_slack_fails_the_promotion_still_succeeds_and_is_audited(
    service: RunningService, slack: SlackSender, slack_stub: SlackStub
) -> None:
    slack_stub.errors["chat.postMessage"] = "channel_not_found"
    assert "`v0001` is now the active adapter" in promote(slack, slack_stub, "v0001")
    posted_to_admins(slack_stub)  # tried, and refused by Slack
    assert active(service) == ("v0001", "v0001")
    [event] = eventually(lambda: audits(service))
    assert (event.actor, event.source, event.action, event.outcome) == (ADMIN, "slack", "promote", "ok")
