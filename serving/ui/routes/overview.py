"""The overview: the active version and since when, answers per day, votes per version, the queue, the cycles."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from typing import Annotated

from apscheduler.triggers.cron import CronTrigger
from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from serving.access import Role
from serving.api.admin.protocol import RunPublic
from serving.api.deps import Services, ServicesDep
from serving.ui import charts
from serving.ui.auth import viewer
from serving.ui.cache import Recent
from serving.ui.sessions import SignedIn
from serving.ui.templating import page
from serving.ui.views import DayCount, OverviewView, VersionVotes
from store import adapters as adapter_repo
from store import feedback as feedback_repo
from store import interactions as interaction_repo
from store import runs as run_repo
from store.db import session_scope
from store.models import CorrectionStatus

router = APIRouter(prefix="/ui")
DAYS_SHOWN = 14
Viewer = Annotated[SignedIn, Depends(viewer(Role.employee, action="ui.overview"))]


def next_fire(crontab: str, *, now: datetime) -> datetime | None:
    """When the nightly cron fires next, or None when it is off (or not a crontab)."""
    try:
        fire = CronTrigger.from_crontab(crontab).get_next_fire_time(None, now)
    except ValueError:
        return None
    return fire.astimezone(UTC) if fire is not None else None


def _answers_per_day(services: Services, first_day: date) -> dict[date, int]:
    with session_scope(services.engine) as session:
        since = datetime(first_day.year, first_day.month, first_day.day, tzinfo=UTC)
        return dict(interaction_repo.answers_per_day(session=session, since=since))


def _votes_by_version(services: Services) -> dict[str | None, tuple[int, int]]:
    with session_scope(services.engine) as session:
        return feedback_repo.vote_totals_by_version(session=session)


def overview(services: Services, user: SignedIn, *, recent: Recent | None = None) -> OverviewView:
    now = datetime.now(UTC)
    first_day = (now - timedelta(days=DAYS_SHOWN - 1)).date()
    recent = recent or Recent(ttl_s=0)
    per_day = recent.get(("answers_per_day", first_day), lambda: _answers_per_day(services, first_day))
    votes = recent.get("votes_by_version", lambda: _votes_by_version(services))
    with session_scope(services.engine) as session:
        active_row = adapter_repo.get_active_version(session=session)
        pending = (
            feedback_repo.count_corrections(session=session, status=CorrectionStatus.pending)
            if user.principal.is_reviewer
            else None
        )
        runs = run_repo.list_runs(session=session, limit=1)
    days = [
        DayCount(day=first_day + timedelta(days=i), answers=per_day.get(first_day + timedelta(days=i), 0))
        for i in range(DAYS_SHOWN)
    ]
    by_version = sorted(
        (VersionVotes(version=version or "none", up=up, down=down) for version, (up, down) in votes.items()),
        key=lambda v: v.version,
    )
    nightly = str(services.info.get("nightly", "off"))
    return OverviewView(
        active_version=services.registry.active.version,
        active_since=active_row.promoted_at if active_row is not None else None,
        answers_per_day=days,
        votes_by_version=by_version,
        pending_corrections=pending,
        last_run=RunPublic.from_row(runs[0]) if runs else None,
        next_run_at=None if nightly == "off" else next_fire(nightly, now=now),
        nightly=nightly,
        answers_chart=charts.bars(
            "Answers per day",
            x_title="day (UTC)",
            y_title="answers",
            labels=tuple(d.day.strftime("%m-%d") for d in days),
            series=(charts.Series("answers", values=tuple(float(d.answers) for d in days)),),
        ),
        votes_chart=charts.stacked_bars(
            "Votes per adapter version",
            x_title="adapter version",
            y_title="% of votes",
            labels=tuple(v.version for v in by_version),
            series=(
                charts.Series("thumbs up %", values=tuple(round(100 * v.up_rate, 1) for v in by_version)),
                charts.Series(
                    "thumbs down %",
                    values=tuple(round(100 - 100 * v.up_rate, 1) if v.up + v.down else 0.0 for v in by_version),
                ),
            ),
        ),
    )


@router.get("", include_in_schema=False)
@router.get("/", include_in_schema=False)
async def show(request: Request, user: Viewer, services: ServicesDep) -> Response:
    view = await asyncio.to_thread(overview, services, user, recent=request.app.state.dashboard_recent)
    return page(request, "overview.html", user=user, view=view)
