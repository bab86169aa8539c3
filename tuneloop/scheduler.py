"""The nightly job: an APScheduler cron trigger that runs one tuning cycle, then retention."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger

from tuneloop.cycle import TuningCycle

log = logging.getLogger(__name__)
NIGHTLY_JOB_ID = "nightly-tuning-cycle"


async def nightly_job(*, cycle: TuningCycle, after_cycle: Callable[[], Awaitable[object]] | None) -> None:
    """The cycle (when there is new feedback), then the housekeeping (retention) whether or not one ran."""
    try:
        await cycle.run_nightly()
    finally:
        if after_cycle is not None:
            await after_cycle()


def build_scheduler(
    *, cycle: TuningCycle, crontab: str, after_cycle: Callable[[], Awaitable[object]] | None = None
) -> AsyncIOScheduler:
    scheduler = AsyncIOScheduler()

    async def job() -> None:
        await nightly_job(cycle=cycle, after_cycle=after_cycle)

    # max_instances=1 and coalesce: a slow cycle never overlaps the next, and missed runs collapse into one.
    scheduler.add_job(
        job,
        CronTrigger.from_crontab(crontab),
        id=NIGHTLY_JOB_ID,
        max_instances=1,
        coalesce=True,
        misfire_grace_time=3600,
        replace_existing=True,
    )
    return scheduler
