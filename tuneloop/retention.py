"""Retention: which old run folders, adapters and logs go, and removing them.

`plan_retention` decides and changes nothing (`tuneloop retention show`). `prune` (`tuneloop retention run`, and
the nightly job after its cycle) takes the cycle's database lock, so that no cycle writes a run folder or an
adapter meanwhile, plans again under it, records the pruned versions and its audit event in one commit, and
then removes the files.

Never removed, whatever the policy says: the active version, the previous one (instant rollback), pinned
versions, the version of an unfinished run, and the run folders of the versions that stay. Anything else goes
only when it is past both its age (`keep_days`) and its count (`keep_runs`, `keep_rejected`,
`keep_superseded`). Only paths inside adapters/ and runs/ (under `storage.shared_dir`, by default the data dir)
and the data dir's logs/ are ever removed, and links are never followed.
"""

from __future__ import annotations

import getpass
import logging
import os
import re
import shutil
import socket
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import BaseModel
from sqlalchemy import Engine

from serving.errors import Conflict, NotFound
from store import adapters as adapter_repo
from store import audit as audit_repo
from store import locks as lock_repo
from store import runs as run_repo
from store.audit import AuditEntry
from store.db import session_scope
from store.models import UNFINISHED_RUN_STATUSES, AdapterStatus, AdapterVersion, TrainingRun, utcnow
from tuneloop.cycle import CYCLE_ACTOR, CYCLE_LOCK, CYCLE_SOURCE, LOCK_TTL_S
from tuneloop.settings import RetentionSettings, Settings

log = logging.getLogger(__name__)
AUDIT_ACTION = "retention.prune"
RUN_FOLDER = re.compile(r"run-(\d+)")
LIVE_LOG_SUFFIX = ".log"  # written by a running process (vllm.log); older logs have other names (vllm.log.1)


class PruneKind(StrEnum):
    run = "run"
    adapter = "adapter"
    log = "log"
    merged = "merged"  # a version merged into the base weights for the merged engine (a cache)


class PruneItem(BaseModel):
    """One thing retention removes: a run folder, an adapter version's folder, or a log (deleted or cut)."""

    kind: PruneKind
    path: str
    bytes: int
    reason: str
    action: Literal["delete", "truncate"] = "delete"
    version: str | None = None
    run_id: int | None = None


class KeptVersion(BaseModel):
    """A version whose files stay whatever the policy says, and why."""

    version: str
    reasons: list[str]


class RetentionPlan(BaseModel):
    policy: RetentionSettings
    items: list[PruneItem]
    kept: list[KeptVersion]
    bytes: int


class PruneFailure(BaseModel):
    path: str
    error: str


class RetentionReport(BaseModel):
    dry_run: bool
    plan: RetentionPlan
    removed: list[PruneItem]
    failed: list[PruneFailure]
    freed_bytes: int


# --- deciding ---------------------------------------------------------------------------------------------------
def plan_retention(*, settings: Settings, engine: Engine, now: datetime | None = None) -> RetentionPlan:
    """What the policy removes now, with sizes and reasons; reads the store and the folders, changes nothing."""
    policy = settings.retention
    now = now or utcnow()
    cutoff = now - timedelta(days=policy.keep_days)
    with session_scope(engine) as session:
        versions = adapter_repo.list_versions(session=session)
        active = adapter_repo.get_active_version(session=session)
        previous = adapter_repo.previous_active_version(session=session)
        runs = {run.id: run for run in run_repo.all_runs(session=session) if run.id is not None}

    protected = _protected(versions, active=active, previous=previous, runs=runs)
    items: list[PruneItem] = []
    kept = [KeptVersion(version=name, reasons=reasons) for name, reasons in protected.items()]
    adapter_items, outside = _adapter_items(settings, versions, protected=protected, cutoff=cutoff, now=now)
    items += adapter_items
    kept += outside
    pruned = {item.version for item in adapter_items} | {v.version for v in versions if v.pruned_at is not None}
    staying = {v.version for v in versions if v.version not in pruned}
    items += _orphan_adapter_items(settings, versions, cutoff=cutoff, now=now)
    items += _run_items(settings, runs, staying=staying, cutoff=cutoff, now=now)
    items += _log_items(settings.logs_dir, limit=policy.keep_log_bytes)
    items += _merged_items(settings.merged_dir, protected=set(protected))
    return RetentionPlan(policy=policy, items=items, kept=kept, bytes=sum(item.bytes for item in items))


def _protected(
    versions: list[AdapterVersion],
    *,
    active: AdapterVersion | None,
    previous: AdapterVersion | None,
    runs: dict[int, TrainingRun],
) -> dict[str, list[str]]:
    reasons: dict[str, list[str]] = defaultdict(list)
    if active is not None:
        reasons[active.version].append("active")
    if previous is not None:
        reasons[previous.version].append("previous (instant rollback)")
    for version in versions:
        if version.pinned:
            reasons[version.version].append("pinned")
    for run in runs.values():
        if run.status in UNFINISHED_RUN_STATUSES and run.adapter_version:
            reasons[run.adapter_version].append(f"its run {run.id} is unfinished")
    return dict(reasons)


def _adapter_items(
    settings: Settings,
    versions: list[AdapterVersion],
    *,
    protected: dict[str, list[str]],
    cutoff: datetime,
    now: datetime,
) -> tuple[list[PruneItem], list[KeptVersion]]:
    policy = settings.retention
    items: list[PruneItem] = []
    outside: list[KeptVersion] = []
    candidates = [v for v in versions if v.path and v.version not in protected]
    newest_first = sorted(candidates, key=lambda v: v.id or 0, reverse=True)
    groups = (
        ("rejected", policy.keep_rejected, [v for v in newest_first if v.status == AdapterStatus.rejected]),
        ("superseded", policy.keep_superseded, [v for v in newest_first if v.status != AdapterStatus.rejected]),
    )
    for label, keep, group in groups:
        for index, version in enumerate(group):
            assert version.path is not None
            path = Path(version.path)
            if version.pruned_at is not None:
                if path.exists() and _inside(path, settings.adapters_dir):  # a removal that failed last time
                    items.append(_adapter_item(version, path, reason=f"{version.version} was pruned; its files remain"))
                continue
            if index < keep or _aware(version.created_at) > cutoff:
                continue
            if not _inside(path, settings.adapters_dir):
                outside.append(
                    KeptVersion(version=version.version, reasons=["its files are outside the adapters folder"])
                )
                continue
            reason = (
                f"{label} {version.version}, {_days(version.created_at, now)} days old, "
                f"beyond the newest {keep} {label}"
            )
            items.append(_adapter_item(version, path, reason=reason))
    return items, outside


def _adapter_item(version: AdapterVersion, path: Path, *, reason: str) -> PruneItem:
    return PruneItem(
        kind=PruneKind.adapter,
        path=str(path),
        bytes=_size(path),
        reason=reason,
        version=version.version,
        run_id=version.run_id,
    )


def _orphan_adapter_items(
    settings: Settings, versions: list[AdapterVersion], *, cutoff: datetime, now: datetime
) -> list[PruneItem]:
    """Adapter folders no version names: left by a cycle that failed before registering its version."""
    folder = settings.adapters_dir
    if not folder.is_dir():
        return []
    known = {Path(v.path).resolve() for v in versions if v.path} | {(folder / v.version).resolve() for v in versions}
    items = []
    for path in sorted(folder.iterdir()):
        if path.is_symlink() or not path.is_dir() or path.resolve() in known:
            continue
        modified = _modified(path)
        if modified > cutoff:
            continue
        reason = f"no version names it (a cycle that failed before registering it), {_days(modified, now)} days old"
        items.append(PruneItem(kind=PruneKind.adapter, path=str(path), bytes=_size(path), reason=reason))
    return items


def _run_items(
    settings: Settings, runs: dict[int, TrainingRun], *, staying: set[str], cutoff: datetime, now: datetime
) -> list[PruneItem]:
    folder = settings.runs_dir
    if not folder.is_dir():
        return []
    numbered = []
    for path in folder.iterdir():
        match = RUN_FOLDER.fullmatch(path.name)
        if match and path.is_dir() and not path.is_symlink():
            numbered.append((int(match.group(1)), path))
    items = []
    for index, (run_id, path) in enumerate(sorted(numbered, reverse=True)):
        if index < settings.retention.keep_runs:
            continue
        run = runs.get(run_id)
        if run is not None and (run.status in UNFINISHED_RUN_STATUSES or run.adapter_version in staying):
            continue  # a version's training files stay as long as the version
        ended = (run.finished_at or run.created_at) if run is not None else _modified(path)
        if _aware(ended) > cutoff:
            continue
        what = f"run {run_id} ({run.status})" if run is not None else f"run folder {path.name} with no run record"
        reason = f"{what}, {_days(ended, now)} days old, beyond the newest {settings.retention.keep_runs} runs"
        items.append(PruneItem(kind=PruneKind.run, path=str(path), bytes=_size(path), reason=reason, run_id=run_id))
    return items


def _merged_items(folder: Path, *, protected: set[str]) -> list[PruneItem]:
    """Merged copies of versions that neither serve nor may serve again at once: rebuilt from the adapter if needed."""
    if not folder.is_dir():
        return []
    return [
        PruneItem(
            kind=PruneKind.merged,
            path=str(path),
            bytes=_size(path),
            reason="merged copy of a version that is not active, previous or pinned",
            version=path.name,
        )
        for path in sorted(folder.iterdir())
        if path.is_dir() and not path.is_symlink() and path.name not in protected
    ]


def _log_items(folder: Path, *, limit: int) -> list[PruneItem]:
    """Over the limit: older logs go, oldest first; then live logs are cut to their newest quarter of the limit."""
    if not folder.is_dir():
        return []
    files = [p for p in folder.iterdir() if p.is_file() and not p.is_symlink()]
    total = sum(p.stat().st_size for p in files)
    items = []
    older = sorted((p for p in files if not p.name.endswith(LIVE_LOG_SUFFIX)), key=lambda p: p.stat().st_mtime)
    for path in older:
        if total <= limit:
            break
        size = path.stat().st_size
        items.append(PruneItem(kind=PruneKind.log, path=str(path), bytes=size, reason=f"logs over {limit:,} bytes"))
        total -= size
    live = sorted((p for p in files if p.name.endswith(LIVE_LOG_SUFFIX)), key=lambda p: p.stat().st_size, reverse=True)
    for path in live:
        if total <= limit:
            break
        size, tail = path.stat().st_size, limit // 4
        if size <= tail:
            continue
        reason = f"logs over {limit:,} bytes: its newest {tail:,} bytes move to {path.name}.1, the file starts again"
        items.append(PruneItem(kind=PruneKind.log, path=str(path), bytes=size - tail, reason=reason, action="truncate"))
        total -= size - tail
    return items


# --- removing -------------------------------------------------------------------------------------------------
def prune(
    *,
    settings: Settings,
    engine: Engine,
    actor: str,
    source: str,
    dry_run: bool = False,
    now: datetime | None = None,
) -> RetentionReport:
    """Remove what the policy says (audited), or with `dry_run` only say what that would be.

    Raises Conflict while a tuning cycle (or another pruning) holds the cycle lock.
    """
    if dry_run:
        plan = plan_retention(settings=settings, engine=engine, now=now)
        return RetentionReport(dry_run=True, plan=plan, removed=[], failed=[], freed_bytes=0)
    holder = f"retention:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    with session_scope(engine) as session:
        acquired = lock_repo.try_acquire(session=session, name=CYCLE_LOCK, holder=holder, ttl_s=LOCK_TTL_S)
    if not acquired:
        _audit_failure(engine, actor=actor, source=source, reason="a tuning cycle is running")
        raise Conflict(
            "a tuning cycle is running: nothing was pruned",
            hint="Run `tuneloop retention run` again when it has finished (`tuneloop runs`).",
        )
    try:
        plan = plan_retention(settings=settings, engine=engine, now=now)
        _record(engine, plan, actor=actor, source=source)
        removed, failed = _remove(settings, plan.items)
    except Exception as error:
        _audit_failure(engine, actor=actor, source=source, reason=f"unexpected: {type(error).__name__}")
        raise
    finally:
        with session_scope(engine) as session:
            lock_repo.release(session=session, name=CYCLE_LOCK, holder=holder)
    if failed:
        # The decision is stored; what could not be removed is retried by the next run (it is still planned).
        log.error("retention.removal_failed count=%s first=%s", len(failed), failed[0].path)
        _audit_failure(engine, actor=actor, source=source, reason="some files could not be removed", failed=failed)
    freed = sum(item.bytes for item in removed)
    log.info("retention.pruned items=%s freed_bytes=%s failed=%s", len(removed), freed, len(failed))
    return RetentionReport(dry_run=False, plan=plan, removed=removed, failed=failed, freed_bytes=freed)


def prune_after_nightly(*, settings: Settings, engine: Engine) -> RetentionReport | None:
    """The nightly job's pruning, after its cycle, as the cycle's own action; a failure is logged, never raised."""
    if not settings.retention.nightly:
        return None
    try:
        return prune(settings=settings, engine=engine, actor=CYCLE_ACTOR, source=CYCLE_SOURCE)
    except Conflict:
        log.info("retention.nightly_skipped reason=a tuning cycle is running")
    except Exception:
        log.exception("retention.nightly_failed")
    return None


def set_pinned(*, engine: Engine, version: str, pinned: bool, actor: str, source: str) -> AdapterVersion:
    """Pin or unpin a version, audited (`adapter.pin` / `adapter.unpin`) in the same commit."""
    with session_scope(engine) as session:
        try:
            row = adapter_repo.set_pinned(session=session, version=version, pinned=pinned, commit=False)
        except LookupError:
            raise NotFound(
                f"adapter version {version} does not exist", hint="List versions with `tuneloop adapters`."
            ) from None
        entry = AuditEntry(
            actor=actor, source=source, action="adapter.pin" if pinned else "adapter.unpin", target=version
        )
        audit_repo.add_audit(session=session, entry=entry)
        session.commit()
        session.refresh(row)
        return row


def host_actor() -> str:
    """Who runs a command on the service's host: its login name (host commands have no API token)."""
    try:
        return f"host:{getpass.getuser()}"[:128]
    except (KeyError, OSError):  # a container user with no passwd entry
        return f"host:uid-{os.getuid()}"


def _record(engine: Engine, plan: RetentionPlan, *, actor: str, source: str) -> None:
    """The pruned versions and the audit event, in one commit, before any file goes."""
    versions = [i.version for i in plan.items if i.kind == PruneKind.adapter and i.version is not None]
    orphans = [Path(i.path).name for i in plan.items if i.kind == PruneKind.adapter and i.version is None]
    with session_scope(engine) as session:
        for name in versions:
            row = adapter_repo.get_version(session=session, version=name)
            if row is not None and row.pruned_at is None:
                adapter_repo.mark_pruned(session=session, version=name)
        detail = {
            "versions": versions,
            "runs": [i.run_id for i in plan.items if i.kind == PruneKind.run],
            "other_adapter_folders": orphans,
            "logs": [Path(i.path).name for i in plan.items if i.kind == PruneKind.log],
            "bytes": plan.bytes,
            "policy": plan.policy.model_dump(),
        }
        audit_repo.add_audit(
            session=session, entry=AuditEntry(actor=actor, source=source, action=AUDIT_ACTION, detail=detail)
        )
        session.commit()


def _audit_failure(
    engine: Engine, *, actor: str, source: str, reason: str, failed: list[PruneFailure] | None = None
) -> None:
    detail = {"reason": reason, "failed": [f.model_dump() for f in failed or []][:50]}
    with session_scope(engine) as session:
        audit_repo.record_audit(
            session=session, actor=actor, source=source, action=AUDIT_ACTION, outcome="failed", detail=detail
        )


def _remove(settings: Settings, items: list[PruneItem]) -> tuple[list[PruneItem], list[PruneFailure]]:
    roots = {
        PruneKind.adapter: settings.adapters_dir,
        PruneKind.run: settings.runs_dir,
        PruneKind.log: settings.logs_dir,
        PruneKind.merged: settings.merged_dir,
    }
    removed, failed = [], []
    for item in items:
        path = Path(item.path)
        try:
            if not _inside(path, roots[item.kind]) or path.is_symlink():
                raise ValueError(f"refusing to remove {path}: not inside {roots[item.kind]}")
            if item.action == "truncate":
                _cut_log(path, keep=settings.retention.keep_log_bytes // 4)
            elif path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        except (OSError, ValueError) as error:
            failed.append(PruneFailure(path=str(path), error=f"{type(error).__name__}: {error}"))
            continue
        removed.append(item)
    return removed, failed


def _cut_log(path: Path, *, keep: int) -> None:
    """Logrotate's copytruncate: the newest `keep` bytes (from a line start) to NAME.1, then the file starts again.

    vLLM holds the file open in append mode, so its next line lands at the new start; a line written between
    the copy and the cut is lost.
    """
    with path.open("rb") as log_file:
        size = log_file.seek(0, os.SEEK_END)
        log_file.seek(max(0, size - keep))
        tail = log_file.read()
    if size > keep and b"\n" in tail:
        tail = tail[tail.index(b"\n") + 1 :]
    older = path.with_name(path.name + ".1")
    partial = path.with_name(path.name + ".1.partial")
    partial.write_bytes(tail)
    partial.replace(older)
    os.truncate(path, 0)


# --- small helpers --------------------------------------------------------------------------------------------
def _inside(path: Path, root: Path) -> bool:
    try:
        resolved = path.resolve()
        return resolved != root.resolve() and resolved.is_relative_to(root.resolve())
    except OSError:
        return False


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += (Path(dirpath) / name).lstat().st_size
            except OSError:
                continue  # removed meanwhile
    return total


def _aware(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes for values stored as UTC.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _modified(path: Path) -> datetime:
    return datetime.fromtimestamp(path.stat().st_mtime, tz=UTC)


def _days(moment: datetime, now: datetime) -> int:
    return max(0, (_aware(now) - _aware(moment)).days)
