"""The `tuneloop` command. `serve` and `model pull` run here; the rest talk to the running service."""

from __future__ import annotations

import getpass
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

app = typer.Typer(
    help="tuneloop: a self-hosted LLM that learns from its users' feedback.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
model_app = typer.Typer(help="The base model.", no_args_is_help=True)
dataset_app = typer.Typer(help="Training data.", no_args_is_help=True)
app.add_typer(model_app, name="model")
app.add_typer(dataset_app, name="dataset")
console = Console()
err_console = Console(stderr=True)

DEFAULT_URL = "http://127.0.0.1:8000"
UrlOpt = Annotated[str, typer.Option("--url", envvar="TUNELOOP_URL", help="The running service.")]
UserOpt = Annotated[str, typer.Option("--user", "-u", envvar="TUNELOOP_USER", help="Acting user id.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object (for scripts).")]
TRAIN_STAGES = ["datasets", "training", "register", "promote", "done"]


def _default_user() -> str:
    return os.environ.get("TUNELOOP_USER") or getpass.getuser()


# --- talking to the service ------------------------------------------------------------------------
def _call(
    url: str,
    method: str,
    path: str,
    *,
    as_json: bool,
    body: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
    timeout: float = 300.0,
) -> dict[str, Any]:
    try:
        response = httpx.request(method, url.rstrip("/") + path, json=body, params=params, timeout=timeout)
    except httpx.TransportError as error:
        _fail(
            as_json,
            "service_unreachable",
            f"cannot reach the tuneloop service at {url} ({error})",
            "Start it with `make up` (or `tuneloop serve`), or pass --url.",
        )
    try:
        data: dict[str, Any] = response.json()
    except ValueError:
        _fail(as_json, "bad_response", f"the service answered {response.status_code} without JSON", None)
    if response.status_code >= 400:
        problem = data.get("error", {}) if isinstance(data.get("error"), dict) else {}
        _fail(
            as_json,
            str(problem.get("code", response.status_code)),
            str(problem.get("message", data)),
            problem.get("hint"),
            extra={k: v for k, v in problem.items() if k == "interaction_id" and v},
        )
    return data


def _fail(as_json: bool, code: str, message: str, hint: str | None, extra: dict[str, Any] | None = None) -> NoReturn:
    if as_json:
        print(json.dumps({"error": {"code": code, "message": message, "hint": hint, **(extra or {})}}))
    else:
        err_console.print(f"[bold red]error:[/] {message}")
        if extra and extra.get("interaction_id"):
            err_console.print(f"(recorded as interaction {extra['interaction_id']})")
        if hint:
            err_console.print(f"[yellow]what to do:[/] {hint}")
    raise typer.Exit(1)


def _emit(as_json: bool, data: dict[str, Any], text: str) -> None:
    if as_json:
        print(json.dumps(data, default=str))
    else:
        console.print(text)


# --- commands that run locally -----------------------------------------------------------------------
@app.command()
def serve() -> None:
    """Run the service (vLLM, the API and the nightly job) in the foreground."""
    import uvicorn

    from tuneloop.logs import configure_logging
    from tuneloop.service import build_service
    from tuneloop.settings import Settings

    configure_logging()
    settings = Settings()
    service = build_service(settings)
    host, port = settings.serving.host, settings.serving.port
    console.print(f"[bold]tuneloop[/] on http://{host}:{port}  (health: /healthz, OpenAI API: /v1, docs: /docs)")
    console.print(f"  store:      {service.services.info['store']}")
    console.print(f"  base model: {settings.base_model_dir}")
    console.print(
        f"  vLLM:       {settings.vllm_base_url}"
        + (f"  (log: {settings.data_dir / 'logs' / 'vllm.log'})" if service.vllm else "  (external)")
    )
    console.print(f"  nightly:    {service.services.info['nightly']}")
    console.print(f"  Slack:      {service.services.info['slack']} ({service.services.info['slack_mode']})")
    uvicorn.run(service.app, host=host, port=port, log_level="info")


@model_app.command("pull")
def model_pull(as_json: JsonOpt = False) -> None:
    """Write the default base model (SmolLM2-135M-Instruct) as a Hugging Face folder, once."""
    from tuneloop.base_model import BaseModelError, pull_default_model
    from tuneloop.settings import Settings

    settings = Settings()
    if settings.serving.base_model is not None:
        _emit(
            as_json,
            {"path": str(settings.base_model_dir), "created": False, "custom": True},
            f"base model is set to {settings.base_model_dir}; nothing to pull",
        )
        return
    target = settings.base_model_dir
    try:
        if not as_json:
            console.print(f"materialising SmolLM2-135M-Instruct into {target} ...")
        path, created = pull_default_model(target)
    except BaseModelError as error:
        _fail(as_json, "model_unavailable", str(error), None)
    _emit(
        as_json,
        {"path": str(path), "created": created},
        f"base model {'written to' if created else 'already at'} {path}",
    )


# --- commands that talk to the service -----------------------------------------------------------------
@app.command()
def ask(text: str, user: UserOpt = "", url: UrlOpt = DEFAULT_URL, as_json: JsonOpt = False) -> None:
    """Ask a question; prints the interaction id, the answer and the adapter that gave it."""
    data = _call(
        url,
        "POST",
        "/api/ask",
        as_json=as_json,
        body={"question": text, "user": user or _default_user(), "source": "cli"},
    )
    _emit(
        as_json,
        data,
        f"[dim]#{data['interaction_id']} · adapter {data['adapter_version']} · "
        f"{data['latency_ms']} ms[/]\n{data['answer']}",
    )


@app.command()
def feedback(
    interaction_id: int,
    vote: Annotated[str, typer.Argument(help="up or down")],
    user: UserOpt = "",
    url: UrlOpt = DEFAULT_URL,
    as_json: JsonOpt = False,
) -> None:
    """Vote on an answer; a later vote by the same user replaces the earlier one."""
    if vote not in ("up", "down"):
        _fail(as_json, "invalid_vote", f"vote must be 'up' or 'down', not {vote!r}", None)
    data = _call(
        url,
        "POST",
        f"/api/interactions/{interaction_id}/feedback",
        as_json=as_json,
        body={"user": user or _default_user(), "vote": vote},
    )
    _emit(as_json, data, f"recorded {vote} on #{interaction_id}")


@app.command()
def correct(
    interaction_id: int, text: str, user: UserOpt = "", url: UrlOpt = DEFAULT_URL, as_json: JsonOpt = False
) -> None:
    """Correct an answer: approved at once for reviewers, pending review for anyone else."""
    data = _call(
        url,
        "POST",
        f"/api/interactions/{interaction_id}/corrections",
        as_json=as_json,
        body={"user": user or _default_user(), "text": text},
    )
    _emit(as_json, data, f"correction {data['correction_id']} is {data['status']}")


@app.command()
def review(
    decision: Annotated[str, typer.Argument(help="approve, reject or list")],
    correction_id: Annotated[int | None, typer.Argument()] = None,
    user: UserOpt = "",
    url: UrlOpt = DEFAULT_URL,
    as_json: JsonOpt = False,
) -> None:
    """Approve or reject a pending correction (reviewers only), or list the pending ones."""
    if decision == "list":
        data = _call(url, "GET", "/api/corrections", as_json=as_json)
        lines = [
            f"{c['correction_id']}: #{c['interaction_id']} by {c['author']}: {c['text']}" for c in data["corrections"]
        ]
        _emit(as_json, data, "\n".join(lines) or "no pending corrections")
        return
    if decision not in ("approve", "reject") or correction_id is None:
        _fail(as_json, "invalid_review", "use `tuneloop review approve|reject CORRECTION_ID` or `review list`", None)
    data = _call(
        url,
        "POST",
        f"/api/corrections/{correction_id}/review",
        as_json=as_json,
        body={"user": user or _default_user(), "decision": decision},
    )
    _emit(as_json, data, f"correction {correction_id} is {data['status']}")


@app.command()
def train(
    user: UserOpt = "",
    url: UrlOpt = DEFAULT_URL,
    as_json: JsonOpt = False,
    wait: Annotated[bool, typer.Option(help="Wait for the cycle to finish.")] = True,
) -> None:
    """Run one tuning cycle now: datasets -> training -> register -> promote."""
    started = _call(url, "POST", "/admin/train", as_json=as_json, body={"user": user or _default_user()})
    run_id = started["run_id"]
    if not wait:
        _emit(as_json, started, f"run {run_id} started")
        return
    run = _follow_run(url, run_id, as_json=as_json)
    if as_json:
        print(json.dumps(run, default=str))
    else:
        _print_run(run)
    if run["status"] == "failed":
        raise typer.Exit(1)


def _follow_run(url: str, run_id: int, *, as_json: bool) -> dict[str, Any]:
    def fetch() -> dict[str, Any]:
        # A long poll: the service answers when the run finishes, or after a second with its progress.
        return _call(url, "GET", f"/admin/runs/{run_id}", as_json=as_json, params={"wait": 1.0})

    if as_json:
        run = fetch()
        while run["status"] in ("queued", "running"):
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
        while run["status"] in ("queued", "running"):
            stage = run.get("stage") or "queued"
            p = run.get("progress") or {}
            step, total = p.get("step"), p.get("total")
            info = " ".join(
                f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                for k, v in p.items()
                if k in ("stage", "loss", "eta_s") and v is not None
            )
            progress.update(task, description=f"run {run_id} · {stage}", completed=step or 0, total=total, info=info)
            run = fetch()
        progress.update(task, description=f"run {run_id} · {run['status']}", completed=1, total=1, info="")
    return run


def _print_run(run: dict[str, Any]) -> None:
    colour = {"succeeded": "green", "failed": "red", "skipped": "yellow", "rejected": "yellow"}.get(
        run["status"], "white"
    )
    console.print(
        f"run {run['id']}: [{colour}]{run['status']}[/]"
        + (f" → adapter {run['adapter_version']}" if run.get("adapter_version") else "")
    )
    if run.get("error"):
        console.print(f"  reason: {run['error']}")
    if run.get("counts"):
        console.print("  data:    " + ", ".join(f"{k}={v}" for k, v in run["counts"].items()))
    gate = (run.get("metrics") or {}).get("gate")
    if gate and "candidate" in gate:
        console.print(f"  gate:    {_scores(gate)} — {gate['reason']}")
    if run.get("timings"):
        console.print("  timings: " + ", ".join(f"{k}={v}" for k, v in run["timings"].items()))


def _scores(gate: dict[str, Any]) -> str:
    """Each score of the candidate beside the score of the version it was compared with."""
    return ", ".join(
        f"{kind} {score:.2f} (vs {gate['active'].get(kind, 0):.2f} {gate.get('against', 'active')})"
        for kind, score in gate["candidate"].items()
    )


@app.command()
def runs(url: UrlOpt = DEFAULT_URL, as_json: JsonOpt = False) -> None:
    """Recent tuning cycles."""
    data = _call(url, "GET", "/admin/runs", as_json=as_json)
    if as_json:
        print(json.dumps(data))
        return
    for run in data["runs"]:
        _print_run(run)


@app.command()
def status(url: UrlOpt = DEFAULT_URL, as_json: JsonOpt = False) -> None:
    """The active adapter, the last run and the new feedback since."""
    data = _call(url, "GET", "/admin/status", as_json=as_json)
    last = data.get("last_run") or {}
    _emit(
        as_json,
        data,
        f"active adapter: {data['active_adapter']}\n"
        f"last run: {last.get('id', '-')} {last.get('status', '')}\n"
        f"new feedback since the last training: {data['new_feedback_since_last_training']}",
    )


@app.command()
def adapters(url: UrlOpt = DEFAULT_URL, as_json: JsonOpt = False) -> None:
    """Adapter versions, with their metrics and which one is active."""
    data = _call(url, "GET", "/admin/adapters", as_json=as_json)
    if as_json:
        print(json.dumps(data))
        return
    table = Table("version", "status", "run", "train loss", "sft rows", "gate scores", "created")
    for v in data["versions"]:
        gate = (v["metrics"] or {}).get("gate") or {}
        training = (v["metrics"] or {}).get("training", {}).get("sft") or {}
        counts = (v["metrics"] or {}).get("counts", {})
        name = f"[bold green]{v['version']} ●[/]" if v["active"] else v["version"]
        loss = training.get("train_loss")
        table.add_row(
            name,
            v["status"],
            str(v["run_id"] or "-"),
            f"{loss:.3f}" if loss is not None else "-",
            str(counts.get("sft_rows", "-")),
            _scores(gate) if "candidate" in gate else "-",
            v["created_at"][:19],
        )
    console.print(table)


@app.command()
def promote(version: str, user: UserOpt = "", url: UrlOpt = DEFAULT_URL, as_json: JsonOpt = False) -> None:
    """Serve VERSION from now on (admins only; audited)."""
    data = _call(
        url, "POST", "/admin/promote", as_json=as_json, body={"user": user or _default_user(), "version": version}
    )
    _emit(as_json, data, f"active adapter: {data['active']} (swap {data['swap_ms']:.0f} ms)")


@app.command()
def rollback(
    version: Annotated[str | None, typer.Argument(help="Default: the version that served before.")] = None,
    user: UserOpt = "",
    url: UrlOpt = DEFAULT_URL,
    as_json: JsonOpt = False,
) -> None:
    """Serve an earlier version again (admins only; audited)."""
    data = _call(
        url, "POST", "/admin/rollback", as_json=as_json, body={"user": user or _default_user(), "version": version}
    )
    _emit(as_json, data, f"active adapter: {data['active']} (swap {data['swap_ms']:.0f} ms)")


@app.command()
def audit(
    url: UrlOpt = DEFAULT_URL,
    as_json: JsonOpt = False,
    limit: Annotated[int, typer.Option(help="How many events, newest first.")] = 50,
) -> None:
    """The audit trail of admin actions, newest first."""
    data = _call(url, "GET", "/admin/audit", as_json=as_json, params={"limit": limit})
    if as_json:
        print(json.dumps(data))
        return
    for e in data["events"]:
        console.print(
            f"{e['created_at'][:19]}  {e['actor']:<14} {e['source']:<6} {e['action']:<9} "
            f"{e['target'] or '-':<8} {e['outcome']}"
        )


@dataset_app.command("export")
def dataset_export(directory: Path, url: UrlOpt = DEFAULT_URL, as_json: JsonOpt = False) -> None:
    """Write the SFT and DPO JSONL files that the next cycle would train on."""
    data = _call(url, "GET", "/admin/dataset", as_json=as_json)
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in ("sft", "dpo"):
        path = directory / f"{name}.jsonl"
        path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in data.get(name, [])))
        written[name] = {"path": str(path), "rows": len(data.get(name, []))}
    _emit(as_json, written, "\n".join(f"{v['path']}: {v['rows']} rows" for v in written.values()))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
