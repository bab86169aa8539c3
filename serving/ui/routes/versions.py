"""Versions and runs: loss curves per run, gate scores per version over time, the gate's samples side by side,
the datasets' counts, and promote / roll back (confirmed first, then through AdminService: audited). Admins."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Form, Query, Request
from starlette.responses import RedirectResponse, Response

from serving.access import Role
from serving.api.admin.protocol import AdapterVersionPublic, RunPublic
from serving.api.deps import Services, ServicesDep
from serving.ui import charts
from serving.ui.auth import actor, viewer
from serving.ui.notices import notice_of
from serving.ui.sessions import SignedIn
from serving.ui.templating import page
from serving.ui.views import ConfirmView, GateSample, VersionRow, VersionsView
from store import adapters as adapter_repo
from store import runs as run_repo
from store.db import session_scope
from store.models import VERSION_NAME_PATTERN, TrainingRun

router = APIRouter(prefix="/ui")
SOURCE = "ui"
RUNS_SHOWN = 12
CURVES_SHOWN = 5
POINTS_PER_CURVE = 60
GATE_VERSIONS_SHOWN = 30
Reader = Annotated[SignedIn, Depends(viewer(Role.admin, action="ui.versions"))]
Promoter = Annotated[SignedIn, Depends(actor(Role.admin, action="promote"))]
RollbackAdmin = Annotated[SignedIn, Depends(actor(Role.admin, action="rollback"))]
Retrainer = Annotated[SignedIn, Depends(actor(Role.admin, action="retrain"))]
Version = Annotated[str, Form(min_length=1, max_length=32, pattern=VERSION_NAME_PATTERN)]
Confirmed = Annotated[Literal["yes", "no"] | None, Form()]


def _score(scores: Any, key: str) -> float | None:
    value = scores.get(key) if isinstance(scores, dict) else None
    return round(float(value), 3) if isinstance(value, int | float) else None


def _gate(version: AdapterVersionPublic) -> dict[str, Any]:
    gate = version.metrics.get("gate")
    return gate if isinstance(gate, dict) else {}


def version_row(version: AdapterVersionPublic) -> VersionRow:
    gate = _gate(version)
    return VersionRow(
        version=version.version,
        status=version.status,
        active=version.active,
        run_id=version.run_id,
        created_at=version.created_at,
        promoted_at=version.promoted_at,
        facts=_score(gate.get("candidate"), "facts"),
        regression=_score(gate.get("candidate"), "regression"),
        gate_reason=gate.get("reason") if isinstance(gate.get("reason"), str) else None,
    )


def _curve(run: TrainingRun, stage: str) -> tuple[tuple[float, float], ...]:
    stats = run.metrics.get(stage)
    losses = stats.get("losses") if isinstance(stats, dict) else None
    if not isinstance(losses, list):
        return ()
    return tuple((float(p[0]), float(p[1])) for p in losses if isinstance(p, list | tuple) and len(p) == 2)


def _thin(points: tuple[tuple[float, float], ...], limit: int) -> tuple[tuple[float, float], ...]:
    # A curve of 60 points reads the same as one of 200 at this size, and draws in a third of the time.
    if len(points) <= limit:
        return points
    stride = len(points) / (limit - 1)
    return (*(points[int(i * stride)] for i in range(limit - 1)), points[-1])


def loss_chart(runs: list[TrainingRun]) -> Any:
    series: list[charts.Series] = []
    for run in runs:
        for stage in ("sft", "dpo"):
            points = _curve(run, stage)
            if points and len(series) < CURVES_SHOWN:
                series.append(charts.Series(f"run {run.id} {stage}", points=_thin(points, POINTS_PER_CURVE)))
    return charts.curves("Training loss per run", x_title="step", y_title="loss", series=tuple(series))


def gate_chart(rows: list[VersionRow], versions: list[AdapterVersionPublic]) -> Any:
    gated = [(row, version) for row, version in zip(rows, versions, strict=True) if _gate(version).get("candidate")]
    gated = gated[-GATE_VERSIONS_SHOWN:]
    labels = tuple(f"{row.version} {row.created_at:%m-%d}" for row, _ in gated)
    return charts.lines(
        "Gate scores per version",
        x_title="version (oldest first)",
        y_title="score",
        labels=labels,
        series=(
            charts.Series("facts (candidate)", values=tuple(row.facts for row, _ in gated)),
            charts.Series("regression (candidate)", values=tuple(row.regression for row, _ in gated)),
            charts.Series(
                "facts (compared version)",
                values=tuple(_score(_gate(v).get("active"), "facts") for _, v in gated),
            ),
        ),
    )


def _samples(version: AdapterVersionPublic | None) -> list[GateSample]:
    if version is None:
        return []
    found = _gate(version).get("samples")
    samples = []
    for item in found if isinstance(found, list) else []:
        if isinstance(item, dict):
            samples.append(
                GateSample(
                    kind=str(item.get("kind", "")),
                    question=str(item.get("question", "")),
                    candidate=str(item.get("candidate", "")),
                    active=str(item.get("active", "")),
                    candidate_score=_score(item, "candidate_score"),
                    active_score=_score(item, "active_score"),
                )
            )
    return samples


def versions_view(services: Services, *, samples_of: str | None) -> VersionsView:
    versions = services.admin.versions()
    with session_scope(services.engine) as session:
        runs = run_repo.list_runs(session=session, limit=RUNS_SHOWN)
        previous = adapter_repo.previous_active_version(session=session)
    rows = [version_row(v) for v in versions]
    gated = [v for v in versions if _gate(v).get("samples")]
    chosen = next((v for v in versions if v.version == samples_of), None) if samples_of else None
    chosen = chosen or (gated[-1] if gated else None)
    counted = next((run for run in runs if run.counts), None)
    return VersionsView(
        active=services.registry.active.version,
        previous=previous.version if previous is not None else None,
        versions=list(reversed(rows)),
        runs=[RunPublic.from_row(run) for run in runs],
        loss_chart=loss_chart(runs),
        gate_chart=gate_chart(rows, versions),
        samples_version=chosen.version if chosen else None,
        samples_against=str(_gate(chosen).get("against") or "") or None if chosen else None,
        samples=_samples(chosen),
        dataset_counts=dict(counted.counts) if counted else {},
        dataset_run=counted.id if counted else None,
    )


@router.get("/versions", include_in_schema=False)
async def show(
    request: Request,
    user: Reader,
    services: ServicesDep,
    samples: Annotated[str | None, Query(max_length=32, pattern=VERSION_NAME_PATTERN)] = None,
    done: str | None = None,
) -> Response:
    view = await asyncio.to_thread(versions_view, services, samples_of=samples)
    return page(request, "versions.html", user=user, view=view, notice=notice_of(done))


def _confirm(request: Request, user: SignedIn, view: ConfirmView) -> Response:
    return page(request, "confirm.html", user=user, view=view)


@router.post("/versions/promote", include_in_schema=False)
async def promote(
    request: Request, user: Promoter, services: ServicesDep, version: Version, confirmed: Confirmed = None
) -> Response:
    if confirmed == "no":
        return RedirectResponse("/ui/versions?done=cancelled", status_code=303)
    if confirmed != "yes":
        active = services.registry.active.version
        question = f"Promote {version}? It replaces {active} for every answer from now on."
        return _confirm(request, user, ConfirmView(action="promote", version=version, active=active, question=question))
    await services.admin.promote(version=version, user_id=user.principal.user_id, source=SOURCE)
    return RedirectResponse("/ui/versions?done=promoted", status_code=303)


@router.post("/versions/rollback", include_in_schema=False)
async def rollback(
    request: Request, user: RollbackAdmin, services: ServicesDep, confirmed: Confirmed = None
) -> Response:
    if confirmed == "no":
        return RedirectResponse("/ui/versions?done=cancelled", status_code=303)
    if confirmed != "yes":
        active = services.registry.active.version
        previous = await asyncio.to_thread(_previous_version, services)
        target = previous or "the version before it (none is recorded: the service will refuse)"
        question = f"Roll back from {active} to {target}?"
        return _confirm(
            request, user, ConfirmView(action="rollback", version=previous, active=active, question=question)
        )
    await services.admin.rollback(version=None, user_id=user.principal.user_id, source=SOURCE)
    return RedirectResponse("/ui/versions?done=rolled_back", status_code=303)


@router.post("/versions/train", include_in_schema=False)
async def train(request: Request, user: Retrainer, services: ServicesDep, confirmed: Confirmed = None) -> Response:
    if confirmed == "no":
        return RedirectResponse("/ui/versions?done=cancelled", status_code=303)
    if confirmed != "yes":
        active = services.registry.active.version
        question = (
            "Start a tuning cycle now? It trains on the feedback so far, and the gate promotes the new version "
            f"only if it beats {active}."
        )
        return _confirm(request, user, ConfirmView(action="train", version=None, active=active, question=question))
    await services.admin.retrain(user_id=user.principal.user_id, source=SOURCE)
    return RedirectResponse("/ui/versions?done=training", status_code=303)


def _previous_version(services: Services) -> str | None:
    with session_scope(services.engine) as session:
        previous = adapter_repo.previous_active_version(session=session)
    return previous.version if previous is not None else None
