"""The nightly job: an APScheduler cron trigger that runs one tuning cycle."""

from __future__ import annotations

import logging

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger

from tuneloop.cycle import TuningCycle

log = logging.getLogger(__name__)
NIGHTLY_JOB_ID = "nightly-tuning-cycle"


def build_scheduler(*, cycle: TuningCycle, crontab: str) -> AsyncIOScheduler:
    scheduler = AsyncIOScheduler()
    # max_instances=1 and coalesce: a slow cycle never overlaps the next, and missed runs collapse into one.
    scheduler.add_job(
        cycle.run_nightly,
        CronTrigger.from_crontab(crontab),
        id=NIGHTLY_JOB_ID,
        max_instances=1,
        coalesce=True,
        misfire_grace_time=3600,
        replace_existing=True,
    )
    return scheduler
