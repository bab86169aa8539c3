"""The `tuneloop` command. `serve`, `worker`, `model pull` and the host commands run here; the rest talk to
the running service."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import httpx
import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

# Protocol modules hold only pydantic types: the CLI reads the very types the routes return.
from serving.api.admin.protocol import (
    AdaptersResponse,
    AdapterVersionPublic,
    AuditPage,
    DatasetResponse,
    ImportAdapterRequest,
    PromoteRequest,
    RollbackRequest,
    RunPage,
    RunPublic,
    StatusResponse,
    SwapResponse,
    TrainResponse,
)
from serving.api.common import ErrorEnvelope
from serving.api.interactions.protocol import (
    MAX_CORRECTION_CHARS,
    AskRequest,
    AskResponse,
    CorrectionPage,
    CorrectionPublic,
    CorrectionRequest,
    ReviewRequest,
    VoteRequest,
    VoteResponse,
)
from serving.api.memory.protocol import MemoryEditRequest, MemoryEntryDetails, MemoryEntryPage, MemoryEntryPublic
from store.db import session_scope
from tuneloop.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from tuneloop.retention import RetentionPlan

app = typer.Typer(
    help="tuneloop: a self-hosted LLM that learns from its users' feedback.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
model_app = typer.Typer(help="The base model.", no_args_is_help=True)
dataset_app = typer.Typer(help="Training data.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens (run on the service's host).", no_args_is_help=True)
memory_app = typer.Typer(
    help="The memory of reviewed answers: what the bot answers as reviewed (reviewers only).", no_args_is_help=True
)
app.add_typer(model_app, name="model")
app.add_typer(dataset_app, name="dataset")
app.add_typer(token_app, name="token")
app.add_typer(memory_app, name="memory")
retention_app = typer.Typer(
    help="Pruning old run folders, adapters and logs by the retention policy (run on the service's host).",
    no_args_is_help=True,
)
app.add_typer(retention_app, name="retention")
adapters_app = typer.Typer(help="Adapter versions (admins only).")
app.add_typer(adapters_app, name="adapters")
console = Console()
err_console = Console(stderr=True)

DEFAULT_URL = "http://127.0.0.1:8000"
UrlOpt = Annotated[str, typer.Option("--url", envvar="TUNELOOP_URL", help="The running service.")]
TokenOpt = Annotated[
    str,
    typer.Option(
        "--token",
        envvar="TUNELOOP_TOKEN",
        show_default=False,
        help="Your API token (or TUNELOOP_TOKEN); create one with `tuneloop token create USER_ID` on the host.",
    ),
]
# Identity comes from the token; a leftover `--user` is answered with a hint instead of acting as someone.
RetiredUserOpt = Annotated[str | None, typer.Option("--user", "-u", hidden=True)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object (for scripts).")]
M = TypeVar("M", bound=BaseModel)


# --- talking to the service ------------------------------------------------------------------------
def _call(
    url: str,
    method: str,
    path: str,
    *,
    token: str,
    as_json: bool,
    response: type[M],
    body: BaseModel | None = None,
    params: dict[str, Any] | None = None,
    timeout: float = 300.0,
) -> M:
    """One request with the caller's token; the answer parsed into the route's own response type."""
    if not token:
        _fail(
            as_json,
            "no_token",
            "no API token: this command acts as you, and the service needs to know who you are",
            "Create one on the service's host with `tuneloop token create YOUR_ID`, then "
            "`export TUNELOOP_TOKEN=...` (or pass --token).",
        )
    try:
        reply = httpx.request(
            method,
            url.rstrip("/") + path,
            content=body.model_dump_json(exclude_none=True) if body is not None else None,
            params={k: v for k, v in (params or {}).items() if v is not None},
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            timeout=timeout,
        )
    except httpx.TransportError as error:
        _fail(
            as_json,
            "service_unreachable",
            f"cannot reach the tuneloop service at {url} ({error})",
            "Start it with `make up` (or `tuneloop serve`), or pass --url.",
        )
    if reply.status_code >= 400:
        try:
            problem = ErrorEnvelope.model_validate_json(reply.content).error
        except ValueError:
            _fail(as_json, "bad_response", f"the service answered {reply.status_code} without an error body", None)
        extra = {"interaction_id": problem.interaction_id} if problem.interaction_id else None
        _fail(as_json, problem.code, problem.message, problem.hint, extra=extra)
    try:
        return response.model_validate_json(reply.content)
    except ValueError:
        _fail(
            as_json,
            "bad_response",
            f"the service's answer to {method} {path} is not what this CLI expects",
            "Is the CLI the same version as the service?",
        )


def _no_user_option(user: str | None, as_json: bool) -> None:
    if user is not None:
        _fail(
            as_json,
            "user_option_retired",
            "--user no longer chooses who acts: the service takes your identity from your token",
            "Drop --user; use the token of the person who acts (TUNELOOP_TOKEN or --token).",
        )


def _fail(as_json: bool, code: str, message: str, hint: str | None, extra: dict[str, Any] | None = None) -> NoReturn:
    if as_json:
        print(json.dumps({"error": {"code": code, "message": message, "hint": hint, **(extra or {})}}))
    else:
        err_console.print(f"[bold red]error:[/] {escape(message)}")
        if extra and extra.get("interaction_id"):
            err_console.print(f"(recorded as interaction {extra['interaction_id']})")
        if hint:
            err_console.print(f"[yellow]what to do:[/] {escape(hint)}")
    raise typer.Exit(1)


def _emit(as_json: bool, data: BaseModel | dict[str, Any], text: str) -> None:
    if as_json:
        print(data.model_dump_json() if isinstance(data, BaseModel) else json.dumps(data, default=str))
    else:
        console.print(text)


# --- commands that run locally -----------------------------------------------------------------------
@app.command()
def serve() -> None:
    """Run the service (vLLM, the API and the nightly job) in the foreground."""
    import logging

    import uvicorn

    from serving.engine import port_holder
    from tuneloop.base_model import BaseModelError, check_model_folder
    from tuneloop.logs import configure_logging
    from tuneloop.service import build_service
    from tuneloop.settings import Settings

    configure_logging()
    settings = Settings()
    if not settings.external_vllm:  # an external vLLM has its own copy of the model
        try:
            check_model_folder(settings.base_model_dir, custom=settings.serving.base_model is not None)
        except BaseModelError as error:
            # One line, before anything starts: otherwise the engine keeper retries it every few seconds.
            logging.getLogger(__name__).error("serve.base_model_unusable error=%s", error)
            raise typer.Exit(1) from None
        # A vLLM left by a crashed service would answer our health checks: name it instead of serving against it.
        holder = port_holder(settings.serving.vllm_host, settings.serving.vllm_port)
        if holder is not None:
            logging.getLogger(__name__).error(
                "serve.vllm_port_taken error=%s hint=%s",
                f"port {settings.serving.vllm_port} for vLLM is already held by {holder}",
                "stop it, or set TUNELOOP_SERVING__VLLM_PORT to a free port",
            )
            raise typer.Exit(1)
    service = build_service(settings)
    host, port = settings.serving.host, settings.serving.port
    console.print(
        f"[bold]tuneloop[/] on http://{host}:{port}  (dashboard: /ui, health: /healthz, OpenAI API: /v1, docs: /docs)"
    )
    console.print(f"  store:      {service.services.info['store']}")
    console.print(f"  base model: {settings.base_model_dir}")
    console.print(
        f"  vLLM:       {settings.vllm_base_url}"
        + (f"  (log: {settings.logs_dir / 'vllm.log'})" if service.vllm else "  (external)")
    )
    if service.services.registry.merged is not None:
        console.print(
            f"  merged:     {service.services.registry.merged.client.base_url}  (the active version at base speed)"
        )
    console.print(f"  nightly:    {service.services.info['nightly']}")
    if settings.training.runner == "worker":
        console.print(f"  training:   queued for `tuneloop worker` (shared: {settings.shared_dir.resolve()})")
    console.print(f"  Slack:      {service.services.info['slack']} ({service.services.info['slack_mode']})")
    # log_config=None: uvicorn's loggers go through our logfmt handler instead of handlers of its own.
    uvicorn.run(service.app, host=host, port=port, log_level="info", log_config=None)


@app.command()
def worker(
    once: Annotated[
        bool, typer.Option("--once", help="Train one queued run if one waits, then exit (for scripts and cron).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print each finished run as one JSON line.")] = False,
) -> None:
    """Train the cycles that services queue (training.runner=worker), here: on a GPU node, say.

    Needs the services' database (TUNELOOP_STORE__URL), their vLLM server(s) (TUNELOOP_SERVING__VLLM_URL or
    VLLM_URLS) and their shared folder (TUNELOOP_STORAGE__SHARED_DIR, at the same path on every host).
    Ctrl-C or SIGTERM stops it; a run in progress is marked failed as interrupted.
    """
    import asyncio
    import logging
    import signal

    from tuneloop.base_model import BaseModelError, check_model_folder
    from tuneloop.logs import configure_logging
    from tuneloop.worker import build_worker

    configure_logging()
    settings = Settings()
    try:
        # The trainer reads the base model here; vLLM has its own copy on its host.
        check_model_folder(settings.base_model_dir, custom=settings.serving.base_model is not None)
    except BaseModelError as error:
        logging.getLogger(__name__).error("worker.base_model_unusable error=%s", error)
        raise typer.Exit(1) from None

    def show(run: RunPublic) -> None:
        if as_json:
            if run.finished:
                print(run.model_dump_json(), flush=True)
        elif run.finished:
            _print_run(run)
        else:
            p = run.progress
            step = f" {p.get('step')}/{p.get('total')}" if p.get("total") else ""
            console.print(f"run {run.id}: {run.stage or 'claimed'}{step}")

    async def main() -> int:
        training = build_worker(settings)
        stop = asyncio.Event()
        current = asyncio.current_task()
        assert current is not None

        def stopping() -> None:
            stop.set()
            if training.busy:
                current.cancel()  # the run is marked failed (interrupted) and the lock given back

        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stopping)
        if not as_json:
            console.print(
                f"[bold]tuneloop worker[/]: {'one queued run' if once else 'queued runs'} from "
                f"{training.engine.url.render_as_string(hide_password=True)}\n"
                f"  vLLM:   {', '.join(settings.vllm_base_urls)}\n  shared: {settings.shared_dir.resolve()}",
                soft_wrap=True,  # a URL or path cut in two is no use in a log
            )
        try:
            if once:
                if not await training.client.healthy():
                    _fail(as_json, "engine_unavailable", f"vLLM at {training.client.base_url} does not answer", None)
                run = await training.run_once(watch=lambda row: show(RunPublic.from_row(row)))
                if run is None:
                    _emit(as_json, {"run": None}, "no queued run")
                    return 0
                return 1 if run.status == "failed" else 0
            await training.run_forever(stop=stop, watch=lambda row: show(RunPublic.from_row(row)))
            return 0
        except asyncio.CancelledError:
            if not stop.is_set():
                raise
            return 0
        finally:
            await training.close()
            if not as_json:
                console.print("worker stopped")

    code = asyncio.run(main())
    if code:
        raise typer.Exit(code)


@model_app.command("pull")
def model_pull(as_json: JsonOpt = False) -> None:
    """Write the default base model (SmolLM2-135M-Instruct) as a Hugging Face folder, once."""
    from tuneloop.base_model import BaseModelError, check_model_folder, is_pulled, pull_default_model
    from tuneloop.settings import Settings

    settings = Settings()
    if settings.serving.base_model is not None:
        try:
            check_model_folder(settings.base_model_dir, custom=True)
        except BaseModelError as error:
            _fail(as_json, "model_unavailable", str(error), None)
        _emit(
            as_json,
            {"path": str(settings.base_model_dir), "created": False, "custom": True},
            f"base model is set to {settings.base_model_dir}; nothing to pull",
        )
        return
    target = settings.base_model_dir
    try:
        if not as_json and not is_pulled(target):
            console.print(f"materialising SmolLM2-135M-Instruct into {target} ...")
        path, created = pull_default_model(target)
    except BaseModelError as error:
        _fail(as_json, "model_unavailable", str(error), None)
    _emit(
        as_json,
        {"path": str(path), "created": created},
        f"base model {'written to' if created else 'already at'} {path}",
    )


# --- API tokens (run on the service's host, against its database, like `model pull`) -------------------
@token_app.command("create")
def token_create(
    user: Annotated[str, typer.Argument(help="The user id the token acts as (a Slack member id, or any name).")],
    label: Annotated[str | None, typer.Option(help="A note to tell tokens apart, e.g. 'laptop'.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an API token for USER. It is printed once; only its hash is stored."""
    from store import tokens as token_repo

    user = user.strip()
    if not user or len(user) > 128:
        _fail(as_json, "invalid_user", "the user id must be 1 to 128 characters", None)
    if label is not None and len(label) > 64:
        _fail(as_json, "invalid_label", "the label must be at most 64 characters", None)
    settings, engine = _local_store(as_json)
    with session_scope(engine) as session:
        issued = token_repo.create_token(session=session, user_id=user, label=label)
    role = _role_name(settings, user)
    if as_json:
        print(json.dumps({"user": user, "token": issued.token, "id": issued.row.id, "role": role}))
        return
    console.print(f"token {issued.row.id} for [bold]{escape(user)}[/] (role: {role}); shown only now:\n")
    console.print(issued.token, markup=False, highlight=False, soft_wrap=True)
    console.print(f"\n[dim]use it with: export TUNELOOP_TOKEN={issued.token[:6]}…  (or --token)[/]")


@token_app.command("list")
def token_list(
    user: Annotated[str | None, typer.Option("--user", "-u", help="Only this user's tokens.")] = None,
    revoked: Annotated[bool, typer.Option("--revoked", help="Include revoked tokens.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Tokens with their owners, prefixes and last use (never the tokens themselves)."""
    from store import tokens as token_repo

    settings, engine = _local_store(as_json)
    with session_scope(engine) as session:
        rows = token_repo.list_tokens(session=session, user_id=user, include_revoked=revoked)
    listed = [
        {
            "id": row.id,
            "user": row.user_id,
            "role": _role_name(settings, row.user_id),
            "prefix": row.prefix,
            "label": row.label,
            "created_at": row.created_at.isoformat(),
            "last_used_at": row.last_used_at.isoformat() if row.last_used_at else None,
            "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None,
        }
        for row in rows
    ]
    if as_json:
        print(json.dumps({"tokens": listed}))
        return
    table = Table("id", "user", "role", "token", "label", "created", "last used", "revoked")
    for t in listed:
        table.add_row(
            str(t["id"]),
            escape(str(t["user"])),
            str(t["role"]),
            f"{t['prefix']}…",
            escape(str(t["label"] or "")),
            str(t["created_at"])[:19],
            str(t["last_used_at"] or "-")[:19],
            str(t["revoked_at"] or "")[:19],
        )
    console.print(table if listed else "no tokens; create one with `tuneloop token create USER_ID`")


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[int, typer.Argument(help="The id shown by `token list`.")], as_json: JsonOpt = False
) -> None:
    """Revoke a token: it stops working at once, in every service process on this database."""
    from store import tokens as token_repo

    _settings, engine = _local_store(as_json)
    try:
        with session_scope(engine) as session:
            row = token_repo.revoke_token(session=session, token_id=token_id)
    except LookupError:
        _fail(as_json, "not_found", f"token {token_id} does not exist", "List them with `tuneloop token list`.")
    _emit(
        as_json,
        {"id": row.id, "user": row.user_id, "revoked": True},
        f"token {row.id} of {escape(row.user_id)} revoked",
    )


# --- retention (run on the service's host, against its data dir and database) ------------------------------
@retention_app.command("show")
def retention_show(as_json: JsonOpt = False) -> None:
    """What `retention run` would remove now, with sizes and reasons; removes nothing."""
    from tuneloop.retention import plan_retention

    settings, engine = _local_store(as_json)
    plan = plan_retention(settings=settings, engine=engine)
    if as_json:
        print(plan.model_dump_json())
        return
    _print_retention(plan, verb="would free")


@retention_app.command("run")
def retention_run(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would go, like `show`; remove nothing.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Remove what the policy says (audited as retention.prune). Refused while a tuning cycle runs."""
    from serving.errors import TuneloopError
    from tuneloop.retention import host_actor, prune

    settings, engine = _local_store(as_json)
    try:
        if as_json:
            report = prune(settings=settings, engine=engine, actor=host_actor(), source="cli", dry_run=dry_run)
        else:
            with console.status("pruning…" if not dry_run else "planning…"):
                report = prune(settings=settings, engine=engine, actor=host_actor(), source="cli", dry_run=dry_run)
    except TuneloopError as error:
        _fail(as_json, error.code, error.message, error.hint)
    if as_json:
        print(report.model_dump_json())
    elif dry_run:
        _print_retention(report.plan, verb="would free")
    else:
        _print_retention(report.plan, verb="freed", freed=report.freed_bytes)
        for failure in report.failed:
            err_console.print(f"[red]not removed:[/] {escape(failure.path)}: {escape(failure.error)}")
    if report.failed:
        raise typer.Exit(1)


@retention_app.command("pin")
def retention_pin(
    version: Annotated[str, typer.Argument(help="A version shown by `tuneloop adapters`.")], as_json: JsonOpt = False
) -> None:
    """Keep VERSION's files whatever the policy says (audited as adapter.pin)."""
    _pin(version, pinned=True, as_json=as_json)


@retention_app.command("unpin")
def retention_unpin(
    version: Annotated[str, typer.Argument(help="A pinned version.")], as_json: JsonOpt = False
) -> None:
    """Let the policy prune VERSION again, unless it is active or previous (audited as adapter.unpin)."""
    _pin(version, pinned=False, as_json=as_json)


def _pin(version: str, *, pinned: bool, as_json: bool) -> None:
    from serving.errors import TuneloopError
    from tuneloop.retention import host_actor, set_pinned

    _settings, engine = _local_store(as_json)
    try:
        row = set_pinned(engine=engine, version=version[:32], pinned=pinned, actor=host_actor(), source="cli")
    except TuneloopError as error:
        _fail(as_json, error.code, error.message, error.hint)
    _emit(
        as_json,
        {"version": row.version, "pinned": row.pinned},
        f"{row.version} {'pinned: retention keeps it' if row.pinned else 'unpinned'}",
    )


def _print_retention(plan: RetentionPlan, *, verb: str, freed: int | None = None) -> None:
    p = plan.policy
    console.print(
        f"policy: older than {p.keep_days} days and beyond the newest {p.keep_runs} runs, {p.keep_rejected} rejected "
        f"and {p.keep_superseded} other adapters; logs up to {_bytes(p.keep_log_bytes)}"
    )
    for kept in plan.kept:
        console.print(f"  kept      {escape(kept.version):<10} {', '.join(kept.reasons)}")
    if not plan.items:
        console.print("nothing to prune")
        return
    table = Table("kind", "path", "size", "why")
    for item in plan.items:
        table.add_row(item.kind, escape(item.path), _bytes(item.bytes), escape(item.reason))
    console.print(table)
    console.print(f"{len(plan.items)} item{'s' if len(plan.items) != 1 else ''}, {verb} {_bytes(freed or plan.bytes)}")


def _bytes(count: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000  # type: ignore[assignment]
    return f"{count} B"


def _local_store(as_json: bool) -> tuple[Settings, Engine]:
    """The service's own settings and database, for commands that run on its host."""
    from store.db import make_engine, migrate

    settings = Settings()
    try:
        migrate(settings.store_url)
        return settings, make_engine(settings.store_url)
    except Exception as error:  # any driver error: say which database, never a traceback
        _fail(
            as_json,
            "store_unavailable",
            f"cannot open the database ({type(error).__name__})",
            "Run this on the service's host, with the same settings (.env, TUNELOOP_STORE__URL).",
        )


def _role_name(settings: Settings, user: str) -> str:
    from tuneloop.service import access_policy

    return access_policy(settings).role_of(user).name


# --- commands that talk to the service -----------------------------------------------------------------
@app.command()
def ask(
    text: str, token: TokenOpt = "", url: UrlOpt = DEFAULT_URL, as_json: JsonOpt = False, user: RetiredUserOpt = None
) -> None:
    """Ask a question; prints the interaction id, the answer and the adapter that gave it."""
    _no_user_option(user, as_json)
    answer = _call(
        url, "POST", "/api/ask", token=token, as_json=as_json, response=AskResponse,
        body=AskRequest(question=text, source="cli"),
    )  # fmt: skip
    _emit(
        as_json,
        answer,
        f"[dim]#{answer.interaction_id} · adapter {answer.adapter_version} · {answer.latency_ms} ms[/]\n"
        f"{escape(answer.answer)}",
    )


@app.command()
def feedback(
    interaction_id: int,
    vote: Annotated[str, typer.Argument(help="up or down")],
    token: TokenOpt = "",
    url: UrlOpt = DEFAULT_URL,
    as_json: JsonOpt = False,
    user: RetiredUserOpt = None,
) -> None:
    """Vote on an answer; a later vote by the same user replaces the earlier one."""
    _no_user_option(user, as_json)
    if vote not in ("up", "down"):
        _fail(as_json, "invalid_vote", f"vote must be 'up' or 'down', not {vote!r}", None)
    recorded = _call(
        url, "POST", f"/api/interactions/{interaction_id}/feedback", token=token, as_json=as_json,
        response=VoteResponse, body=VoteRequest(vote="up" if vote == "up" else "down"),
    )  # fmt: skip
    _emit(as_json, recorded, f"recorded {recorded.vote} on #{interaction_id}")


@app.command()
def correct(
    interaction_id: int,
    text: str,
    token: TokenOpt = "",
    url: UrlOpt = DEFAULT_URL,
    as_json: JsonOpt = False,
    user: RetiredUserOpt = None,
) -> None:
    """Correct an answer: approved at once for reviewers, pending review for anyone else."""
    _no_user_option(user, as_json)
    correction = _call(
        url, "POST", f"/api/interactions/{interaction_id}/corrections", token=token, as_json=as_json,
        response=CorrectionPublic, body=CorrectionRequest(text=text),
    )  # fmt: skip
    _emit(as_json, correction, f"correction {correction.correction_id} is {correction.status}")


@app.command()
def review(
    decision: Annotated[str, typer.Argument(help="approve, reject or list")],
    correction_id: Annotated[int | None, typer.Argument()] = None,
    token: TokenOpt = "",
    url: UrlOpt = DEFAULT_URL,
    as_json: JsonOpt = False,
    limit: Annotated[int, typer.Option(help="With list: how many, newest first.")] = 50,
    before: Annotated[int | None, typer.Option(help="With list: the next_cursor of the previous page.")] = None,
    user: RetiredUserOpt = None,
) -> None:
    """Approve or reject a pending correction, or list the pending ones (reviewers only)."""
    _no_user_option(user, as_json)
    if decision == "list":
        page = _call(
            url, "GET", "/api/corrections", token=token, as_json=as_json, response=CorrectionPage,
            params={"limit": limit, "before": before},
        )  # fmt: skip
        lines = [
            f"{c.correction_id}: #{c.interaction_id} by {escape(c.author)}: {escape(c.text)}" for c in page.corrections
        ]
        if page.has_more:
            lines.append(f"[dim]more: --before {page.next_cursor}[/]")
        _emit(as_json, page, "\n".join(lines) or "no pending corrections")
        return
    if decision not in ("approve", "reject") or correction_id is None:
        _fail(as_json, "invalid_review", "use `tuneloop review approve|reject CORRECTION_ID` or `review list`", None)
    reviewed = _call(
        url, "POST", f"/api/corrections/{correction_id}/review", token=token, as_json=as_json,
        response=CorrectionPublic, body=ReviewRequest(decision="approve" if decision == "approve" else "reject"),
    )  # fmt: skip
    _emit(as_json, reviewed, f"correction {correction_id} is {reviewed.status}")


@app.command()
def train(
    token: TokenOpt = "",
    url: UrlOpt = DEFAULT_URL,
    as_json: JsonOpt = False,
    wait: Annotated[bool, typer.Option(help="Wait for the cycle to finish.")] = True,
    user: RetiredUserOpt = None,
) -> None:
    """Run one tuning cycle now: datasets -> training -> register -> promote (admins only)."""
    _no_user_option(user, as_json)
    started = _call(url, "POST", "/admin/train", token=token, as_json=as_json, response=TrainResponse)
    if not wait:
        _emit(as_json, started, f"run {started.run_id} started")
        return
    run = _follow_run(url, started.run_id, token=token, as_json=as_json)
    if as_json:
        print(run.model_dump_json())
    else:
        _print_run(run)
    if run.status == "failed":
        raise typer.Exit(1)


def _follow_run(url: str, run_id: int, *, token: str, as_json: bool) -> RunPublic:
    def fetch() -> RunPublic:
        # A long poll: the service answers when the run finishes, or after a second with its progress.
        return _call(
            url, "GET", f"/admin/runs/{run_id}", token=token, as_json=as_json, response=RunPublic,
            params={"wait": 1.0},
        )  # fmt: skip

    if as_json:
        run = fetch()
        while not run.finished:
            run = fetch()
        return run
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err_console) as progress:
        task = progress.add_task(f"run {run_id}", total=None, info="")
        run = fetch()
        while not run.finished:
            p = run.progress
            info = " ".join(
                f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                for k, v in p.items()
                if k in ("stage", "loss", "eta_s") and v is not None
            )
            progress.update(
                task,
                description=f"run {run_id} · {run.stage or 'queued'}",
                completed=p.get("step") or 0,
                total=p.get("total"),
                info=info,
            )
            run = fetch()
        progress.update(task, description=f"run {run_id} · {run.status}", completed=1, total=1, info="")
    return run


def _print_run(run: RunPublic) -> None:
    colour = {"succeeded": "green", "failed": "red", "skipped": "yellow", "rejected": "yellow"}.get(run.status, "white")
    console.print(
        f"run {run.id}: [{colour}]{run.status}[/]"
        + (f" → adapter {run.adapter_version}" if run.adapter_version else "")
    )
    if run.error:
        console.print(f"  reason: {escape(run.error)}")
    if run.counts:
        console.print("  data:    " + ", ".join(f"{k}={v}" for k, v in run.counts.items()))
    if "candidate" in run.gate:
        console.print(f"  gate:    {_scores(run.gate)} — {run.gate.get('reason', '')}")
    if run.timings:
        console.print("  timings: " + ", ".join(f"{k}={v}" for k, v in run.timings.items()))


def _scores(gate: dict[str, Any]) -> str:
    """Each score of the candidate beside the score of the version it was compared with."""
    return ", ".join(
        f"{kind} {score:.2f} (vs {gate['active'].get(kind, 0):.2f} {gate.get('against', 'active')})"
        for kind, score in gate["candidate"].items()
    )


@app.command()
def runs(
    token: TokenOpt = "",
    url: UrlOpt = DEFAULT_URL,
    as_json: JsonOpt = False,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
    before: Annotated[int | None, typer.Option(help="The next_cursor of the previous page.")] = None,
) -> None:
    """Recent tuning cycles (admins only)."""
    page = _call(
        url, "GET", "/admin/runs", token=token, as_json=as_json, response=RunPage,
        params={"limit": limit, "before": before},
    )  # fmt: skip
    if as_json:
        print(page.model_dump_json())
        return
    for run in page.runs:
        _print_run(run)
    if page.has_more:
        console.print(f"[dim]more: --before {page.next_cursor}[/]")


@app.command()
def status(token: TokenOpt = "", url: UrlOpt = DEFAULT_URL, as_json: JsonOpt = False) -> None:
    """The active adapter, the last run and the new feedback since."""
    data = _call(url, "GET", "/admin/status", token=token, as_json=as_json, response=StatusResponse)
    last = data.last_run
    _emit(
        as_json,
        data,
        f"active adapter: {data.active_adapter}\n"
        f"last run: {last.id if last else '-'} {last.status if last else ''}\n"
        f"new feedback since the last training: {data.new_feedback_since_last_training}\n"
        f"access: {data.access}",
    )


@adapters_app.callback(invoke_without_command=True)
def adapters(ctx: typer.Context, token: TokenOpt = "", url: UrlOpt = DEFAULT_URL, as_json: JsonOpt = False) -> None:
    """Adapter versions, with their metrics and which one is active (admins only)."""
    if ctx.invoked_subcommand is not None:
        return
    data = _call(url, "GET", "/admin/adapters", token=token, as_json=as_json, response=AdaptersResponse)
    if as_json:
        print(data.model_dump_json())
        return
    table = Table("version", "status", "run", "train loss", "sft rows", "gate scores", "created")
    for v in data.versions:
        gate = v.metrics.get("gate") or {}
        training = (v.metrics.get("training") or {}).get("sft") or {}
        counts = v.metrics.get("counts") or {}
        loss = training.get("train_loss")
        status = v.status + (" · pinned" if v.pinned else "") + (" · pruned" if v.pruned_at else "")
        table.add_row(
            f"[bold green]{v.version} ●[/]" if v.active else v.version,
            status,
            str(v.run_id or ("imported" if "import" in v.metrics else "-")),
            f"{loss:.3f}" if loss is not None else "-",
            str(counts.get("sft_rows", "-")),
            _scores(gate) if "candidate" in gate else "-",
            v.created_at.isoformat()[:19],
        )
    console.print(table)


@adapters_app.command("import")
def adapters_import(
    path: Annotated[Path, typer.Argument(help="A PEFT LoRA folder (adapter_config.json, adapter_model.safetensors).")],
    name: Annotated[str | None, typer.Option("--name", help="The version's name. Default: the next vNNNN.")] = None,
    token: TokenOpt = "",
    url: UrlOpt = DEFAULT_URL,
    as_json: JsonOpt = False,
) -> None:
    """Register an adapter trained elsewhere as a new version, ready but not active (admins only; audited).

    The service reads PATH on its own host and copies it; serve it then with `tuneloop promote VERSION`.
    """
    try:
        # Absolute: the service resolves nothing against the directory this command runs in.
        body = ImportAdapterRequest(path=str(path.expanduser().absolute()), version=name)
    except ValidationError as error:
        problem = error.errors()[0]
        _fail(
            as_json,
            "invalid_request",
            f"{'--name' if problem['loc'][0] == 'version' else 'PATH'}: {problem['msg']}",
            "Version names are letters, digits, '.', '_' and '-', at most 32; leave --name out for the next vNNNN.",
        )
    version = _call(
        url, "POST", "/admin/adapters/import", token=token, as_json=as_json, response=AdapterVersionPublic, body=body
    )
    sha256 = (version.metrics.get("import") or {}).get("sha256", "")
    _emit(
        as_json,
        version,
        f"imported {body.path} as {version.version} ({version.status}; sha256 {sha256[:12]})\n"
        f"serve it with `tuneloop promote {version.version}`",
    )


@app.command()
def promote(
    version: str, token: TokenOpt = "", url: UrlOpt = DEFAULT_URL, as_json: JsonOpt = False, user: RetiredUserOpt = None
) -> None:
    """Serve VERSION from now on (admins only; audited)."""
    _no_user_option(user, as_json)
    swap = _call(
        url, "POST", "/admin/promote", token=token, as_json=as_json, response=SwapResponse,
        body=_version_request(PromoteRequest, version, as_json),
    )  # fmt: skip
    _emit(as_json, swap, f"active adapter: {swap.active} (swap {swap.swap_ms or 0:.0f} ms)")


@app.command()
def rollback(
    version: Annotated[str | None, typer.Argument(help="Default: the version that served before.")] = None,
    token: TokenOpt = "",
    url: UrlOpt = DEFAULT_URL,
    as_json: JsonOpt = False,
    user: RetiredUserOpt = None,
) -> None:
    """Serve an earlier version again (admins only; audited)."""
    _no_user_option(user, as_json)
    body = _version_request(RollbackRequest, version, as_json) if version else RollbackRequest()
    swap = _call(url, "POST", "/admin/rollback", token=token, as_json=as_json, response=SwapResponse, body=body)
    _emit(as_json, swap, f"active adapter: {swap.active} (swap {swap.swap_ms or 0:.0f} ms)")


def _version_request(request: type[M], version: str, as_json: bool) -> M:
    try:
        return request.model_validate({"version": version})
    except ValueError:
        _fail(
            as_json,
            "invalid_version",
            f"{version[:40]!r} is not a version name (letters, digits, '.', '_', '-'; at most 32)",
            "List versions with `tuneloop adapters`.",
        )


@app.command()
def audit(
    token: TokenOpt = "",
    url: UrlOpt = DEFAULT_URL,
    as_json: JsonOpt = False,
    limit: Annotated[int, typer.Option(help="How many events, newest first.")] = 50,
    before: Annotated[int | None, typer.Option(help="The next_cursor of the previous page.")] = None,
    actor: Annotated[str | None, typer.Option(help="Only this user's actions.")] = None,
    action: Annotated[str | None, typer.Option(help="Only this action (promote, rollback, retrain, ...).")] = None,
    outcome: Annotated[str | None, typer.Option(help="ok, refused or failed.")] = None,
) -> None:
    """The audit trail of admin actions, newest first (admins only)."""
    page = _call(
        url, "GET", "/admin/audit", token=token, as_json=as_json, response=AuditPage,
        params={"limit": limit, "before": before, "actor": actor, "action": action, "outcome": outcome},
    )  # fmt: skip
    if as_json:
        print(page.model_dump_json())
        return
    for e in page.events:
        console.print(
            f"{e.created_at.isoformat()[:19]}  {escape(e.actor):<14} {e.source:<6} {e.action:<9} "
            f"{escape(e.target or '-'):<8} {e.outcome}"
        )
    if page.has_more:
        console.print(f"[dim]more: --before {page.next_cursor}[/]")


@dataset_app.command("export")
def dataset_export(directory: Path, token: TokenOpt = "", url: UrlOpt = DEFAULT_URL, as_json: JsonOpt = False) -> None:
    """Write the SFT and DPO JSONL files that the next cycle would train on (admins only)."""
    data = _call(url, "GET", "/admin/dataset", token=token, as_json=as_json, response=DatasetResponse)
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, rows in (("sft", data.sft), ("dpo", data.dpo)):
        path = directory / f"{name}.jsonl"
        path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        written[name] = {"path": str(path), "rows": len(rows)}
    _emit(as_json, written, "\n".join(f"{v['path']}: {v['rows']} rows" for v in written.values()))


# --- the memory of reviewed answers (reviewers only) ------------------------------------------------------
EntryIdArg = Annotated[int, typer.Argument(help="The entry id shown by `memory list` or `memory search`.")]


@memory_app.command("list")
def memory_list(
    token: TokenOpt = "",
    url: UrlOpt = DEFAULT_URL,
    as_json: JsonOpt = False,
    status: Annotated[str, typer.Option(help="active (served), retired or all.")] = "active",
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 50,
    before: Annotated[int | None, typer.Option(help="The next_cursor of the previous page.")] = None,
) -> None:
    """Reviewed answers, newest first."""
    if status not in ("active", "retired", "all"):
        _fail(as_json, "invalid_status", f"status must be active, retired or all, not {status[:40]!r}", None)
    page = _call(
        url, "GET", "/api/memory", token=token, as_json=as_json, response=MemoryEntryPage,
        params={"limit": limit, "before": before, "status": status},
    )  # fmt: skip
    if as_json:
        print(page.model_dump_json())
        return
    lines = [_entry_line(entry) for entry in page.entries]
    if not lines:
        lines.append("no entries" if status == "all" else f"no {status} entries")
    if page.has_more:
        lines.append(f"[dim]more: --before {page.next_cursor}[/]")
    console.print("\n".join(lines))


@memory_app.command("search")
def memory_search(
    query: Annotated[str, typer.Argument(help="A question, as someone would ask it.")],
    token: TokenOpt = "",
    url: UrlOpt = DEFAULT_URL,
    as_json: JsonOpt = False,
    limit: Annotated[int, typer.Option(help="How many, best first.")] = 10,
) -> None:
    """Active reviewed answers nearest in meaning to QUERY, best first, with their similarity."""
    page = _call(
        url, "GET", "/api/memory", token=token, as_json=as_json, response=MemoryEntryPage,
        params={"q": query, "limit": limit},
    )  # fmt: skip
    lines = [f"{entry.similarity or 0:.2f}  {_entry_line(entry)}" for entry in page.entries]
    _emit(as_json, page, "\n".join(lines) or "no active entries")


@memory_app.command("show")
def memory_show(
    entry_id: EntryIdArg, token: TokenOpt = "", url: UrlOpt = DEFAULT_URL, as_json: JsonOpt = False
) -> None:
    """One entry: every wording of its question, its answer, who approved it and how many answers used it."""
    entry = _call(url, "GET", f"/api/memory/{entry_id}", token=token, as_json=as_json, response=MemoryEntryDetails)
    _emit(as_json, entry, _entry_text(entry))


@memory_app.command("edit")
def memory_edit(
    entry_id: EntryIdArg,
    answer: Annotated[str, typer.Option("--answer", help="The answer to give from now on.", show_default=False)],
    token: TokenOpt = "",
    url: UrlOpt = DEFAULT_URL,
    as_json: JsonOpt = False,
) -> None:
    """Replace an entry's answer: it is served at once, with you as its approver (audited)."""
    try:
        body = MemoryEditRequest.model_validate({"answer": answer})
    except ValueError:
        _fail(
            as_json,
            "invalid_answer",
            f"the answer must be 1 to {MAX_CORRECTION_CHARS:,} characters, not counting spaces around it",
            "Pass the answer the bot should give with --answer.",
        )
    entry = _call(
        url, "PATCH", f"/api/memory/{entry_id}", token=token, as_json=as_json, response=MemoryEntryDetails, body=body
    )
    _emit(
        as_json,
        entry,
        f"entry {entry.id} now answers, approved by {escape(entry.approved_by)}:\n{escape(entry.answer)}",
    )


@memory_app.command("retire")
def memory_retire(
    entry_id: EntryIdArg, token: TokenOpt = "", url: UrlOpt = DEFAULT_URL, as_json: JsonOpt = False
) -> None:
    """Stop serving an entry, at once (audited); it stays listed under --status retired."""
    entry = _call(
        url, "POST", f"/api/memory/{entry_id}/retire", token=token, as_json=as_json, response=MemoryEntryDetails
    )
    _emit(as_json, entry, f"entry {entry.id} retired; it is no longer served")


def _entry_line(entry: MemoryEntryPublic) -> str:
    question = _short(entry.question or "-", 60)
    return (
        f"{entry.id}: [{'green' if entry.status == 'active' else 'dim'}]{entry.status}[/] "
        f"{escape(question)} → {escape(_short(entry.answer, 80))} [dim]({escape(entry.approved_by)})[/]"
    )


def _entry_text(entry: MemoryEntryDetails) -> str:
    lines = [f"entry {entry.id} ({entry.status})", "question:"]
    lines += [f"  {escape(wording)}" for wording in entry.wordings]
    lines += [
        f"answer:\n  {escape(entry.answer)}",
        f"approved by {escape(entry.approved_by)} at {entry.approved_at.isoformat()[:19]}"
        + (f" (correction {entry.correction_id})" if entry.correction_id else ""),
        f"used by {entry.answers_using} answer{'s' if entry.answers_using != 1 else ''}",
    ]
    if entry.retired_at is not None:
        lines.append(f"retired at {entry.retired_at.isoformat()[:19]} by {escape(entry.updated_by or '-')}")
    return "\n".join(lines)


def _short(text: str, chars: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= chars else flat[: chars - 1] + "…"


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
