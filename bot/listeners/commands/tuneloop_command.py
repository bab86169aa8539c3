"""/tuneloop help | status | adapters | retrain | promote VERSION | rollback [VERSION].

Everyone may use help and status; only admins the rest. Quick subcommands answer in the ack; retrain,
promote and rollback ack at once and answer from the lazy listener through the response URL.
Refusals say why and are audited, like every admin action. A refusal needs no store: it is acked at once, and
audited after the ack.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot import views
from bot.deps import BotDeps
from bot.errors import report_failure
from serving.api.admin.protocol import RunPublic
from serving.errors import Forbidden, TuneloopError
from store import audit as audit_repo
from store.db import session_scope
from store.models import VERSION_NAME_PATTERN

log = logging.getLogger(__name__)

COMMAND = "/tuneloop"
SOURCE = "slack"
SLOW = {"retrain", "promote", "rollback"}
# A subcommand and at most one version name; longer text is refused before anything is looked up or audited.
MAX_COMMAND_CHARS = 200
VERSION_NAME = re.compile(VERSION_NAME_PATTERN)


@dataclass(frozen=True)
class Subcommand:
    name: str
    args: list[str] = field(default_factory=list)
    chars: int = 0  # the length of the text it was read from

    @classmethod
    def parse(cls, text: str) -> Subcommand:
        words = text.split()
        return cls(words[0].lower() if words else "help", words[1:], len(text))

    @property
    def version(self) -> str | None:
        return self.args[0] if self.args else None

    def bound_error(self) -> str | None:
        """A kind usage message for text that no subcommand can mean: too long, or not a version name."""
        if self.chars > MAX_COMMAND_CHARS:
            return (
                f"That is {self.chars:,} characters; `/tuneloop` takes a subcommand and at most a version name "
                f"({MAX_COMMAND_CHARS} characters in all).\n{views.HELP_TEXT}"
            )
        if self.name in ("promote", "rollback") and self.version and not VERSION_NAME.fullmatch(self.version):
            return (
                "That is not a version name: versions look like `v0003` (letters, digits, `.`, `_` and `-`, "
                "at most 32 characters). `/tuneloop adapters` lists them."
            )
        return None

    def usage_error(self) -> str | None:
        bound = self.bound_error()
        if bound:
            return bound
        if self.name == "promote" and len(self.args) != 1:
            return "Usage: `/tuneloop promote VERSION` (see `/tuneloop adapters`)."
        if self.name == "rollback" and len(self.args) > 1:
            return "Usage: `/tuneloop rollback [VERSION]`."
        return None


def refusal(error: TuneloopError) -> str:
    return f":no_entry: {error.message[0].upper()}{error.message[1:]}." + (f" {error.hint}" if error.hint else "")


def register(app: AsyncApp, deps: BotDeps) -> None:
    admin = deps.services.admin

    async def answer_command(ack: AsyncAck, body: dict[str, Any]) -> None:
        user_id = str(body["user_id"])
        command = Subcommand.parse(str(body.get("text") or ""))
        bound = command.bound_error()
        if bound:
            await ack(text=bound)
        elif command.name == "help":
            await ack(text=views.HELP_TEXT)
        elif command.name == "status":
            await ack(text=views.status_text(await asyncio.to_thread(admin.status)))
        elif command.name == "adapters":
            if not deps.access.is_admin(user_id):
                await ack(text=":no_entry: Listing adapters needs an admin; you are not one. Ask an admin.")
                await asyncio.to_thread(_audit_refusal, deps, user_id=user_id, action="adapters")
            else:
                await ack(text=views.adapters_text(await asyncio.to_thread(admin.versions)))
        elif command.name in SLOW:
            refused = admin.refusal(command.name, user_id)
            if refused is not None:
                await ack(text=refusal(refused))
                # The admin service refuses it again, before doing anything, and audits the refusal.
                with contextlib.suppress(Forbidden):
                    await _run_admin_action(deps, command, user_id=user_id)
                return
            usage = command.usage_error()
            if usage:
                await ack(text=usage)
            else:
                await ack(text=_working_text(command))
        else:
            await ack(text=f"I don't know `{command.name}`.\n{views.HELP_TEXT}")

    async def run_slow_command(body: dict[str, Any], respond: AsyncRespond, client: AsyncWebClient) -> None:
        user_id = str(body["user_id"])
        command = Subcommand.parse(str(body.get("text") or ""))
        if command.name not in SLOW or not deps.access.is_admin(user_id) or command.usage_error():
            return  # answered in the ack
        try:
            result = await _run_admin_action(deps, command, user_id=user_id)
            if command.name != "retrain":
                await respond(
                    text=f":white_check_mark: `{result}` is now the active adapter.", response_type="ephemeral"
                )
                return
            run_id = int(result)
            # With training.runner=worker the service only queues: a `tuneloop worker` process picks the run up.
            state = "queued for a training worker" if deps.services.info.get("training") == "worker" else "started"
            await respond(text=f"Run {run_id} {state}; I'll post the result here when it finishes.")
            run = await follow_run(deps, run_id)
            await _post_result(respond, client, user_id=user_id, text=views.run_result_text(run))
        except TuneloopError as error:
            await respond(
                text=refusal(error)
                if isinstance(error, Forbidden)
                else f":x: {views.failure_text(message=error.message, hint=error.hint, ref=None)}"
            )
        except Exception as error:
            await report_failure(error=error, client=client, body=body)

    app.command(COMMAND)(ack=answer_command, lazy=[run_slow_command])


def _working_text(command: Subcommand) -> str:
    if command.name == "retrain":
        return "Starting a tuning cycle…"
    if command.name == "promote":
        return f"Promoting `{command.args[0]}`…"
    return f"Rolling back to `{command.args[0]}`…" if command.args else "Rolling back to the previous version…"


async def _run_admin_action(deps: BotDeps, command: Subcommand, *, user_id: str) -> str | int:
    admin = deps.services.admin
    if command.name == "retrain":
        return await admin.retrain(user_id=user_id, source=SOURCE)
    if command.name == "promote":
        return (await admin.promote(version=command.version or "", user_id=user_id, source=SOURCE)).version
    return (await admin.rollback(version=command.version, user_id=user_id, source=SOURCE)).version


def _audit_refusal(deps: BotDeps, *, user_id: str, action: str) -> None:
    with session_scope(deps.services.engine) as session:
        audit_repo.record_audit(
            session=session,
            actor=user_id,
            source=SOURCE,
            action=action,
            outcome="refused",
            detail={"reason": "not an admin"},
        )
    log.info("audit action=%s actor=%s outcome=refused", action, user_id)


async def follow_run(deps: BotDeps, run_id: int) -> RunPublic:
    """Wait until the run finishes (the same wait the API's long poll uses)."""
    return await deps.services.admin.wait_for_run(run_id, timeout_s=None, poll_s=deps.run_poll_interval_s)


async def _post_result(respond: AsyncRespond, client: AsyncWebClient, *, user_id: str, text: str) -> None:
    try:
        await respond(text=text, response_type="ephemeral")
    except Exception as error:
        # A response URL lives 30 minutes; a long run outlives it: send the result as a direct message instead.
        log.info("slack.response_url_expired error=%s: sending a DM", error)
        try:
            await client.chat_postMessage(channel=user_id, text=text)
        except SlackApiError as slack_error:
            log.error("slack.run_result_not_delivered user=%s error=%s", user_id, slack_error)
