"""The adapter registry: which LoRA version serves, hot-swapped without failing a request.

Every version is loaded into vLLM under its own name (`tuneloop-v0001`, ...), because reloading under
one name serves stale answers from the prefix cache. Switching is a pointer swap under a lock; the
previous version stays loaded so that a rollback is instant, and older ones are unloaded only after
the requests running on them have finished. A switch and its audit event are stored in one commit.
Store reads and writes run in worker threads; a switch still happens whole under the swap lock.

The store is the one truth about which version is active: a promotion made by another process reaches
this one through `follow_store` (called by `serving.replicas.ActiveVersionWatcher`), which loads the
version before any request here moves to it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from serving.client import InferenceClient
from serving.errors import Conflict, EngineRejected, NotFound, TuneloopError
from serving.merged import MergedEngine
from store import adapters as adapter_repo
from store import audit as audit_repo
from store.audit import AuditEntry
from store.db import session_scope
from store.models import BASE_VERSION, AdapterStatus, AdapterVersion

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedAdapter:
    version: str  # "base" or "v0001"
    model: str  # the name vLLM knows it by
    # The engine to send it to when not the registry's own client: the merged engine, for the active version.
    endpoint: InferenceClient | None = field(default=None, compare=False)


class AdapterRegistry:
    def __init__(
        self,
        *,
        client: InferenceClient,
        engine: Engine,
        base_model_name: str,
        prefix: str = "tuneloop-",
        merged: MergedEngine | None = None,
    ):
        self._client = client
        self._merged = merged
        self._paths: dict[str, str] = {}  # adapter folders of loaded versions, for the merged engine
        self._engine = engine
        self._base = ServedAdapter(BASE_VERSION, base_model_name)
        self._prefix = prefix
        self._active = self._base
        self._previous: ServedAdapter | None = None
        self._loaded: dict[str, ServedAdapter] = {BASE_VERSION: self._base}
        self._in_flight: Counter[str] = Counter()
        self._drained = asyncio.Condition()
        self._swap_lock = asyncio.Lock()
        self._housekeeping: set[asyncio.Task[None]] = set()
        self.last_swap_ms: float | None = None
        # The store's (active version, promoted at) as this process last served it; None until restored.
        self._stamp: tuple[str, str] | None = None
        # A version another process promoted that could not be loaded here, and when: retried after a pause.
        self._failed_follow: tuple[str, float] | None = None

    # --- reading -------------------------------------------------------------------------------
    @property
    def active(self) -> ServedAdapter:
        return self._active

    @property
    def previous(self) -> ServedAdapter | None:
        """The version that served before the active one (kept loaded for an instant rollback), if known."""
        return self._previous

    @property
    def loaded_versions(self) -> list[str]:
        return sorted(self._loaded)

    def served_name(self, version: str) -> str:
        return self._base.model if version == BASE_VERSION else f"{self._prefix}{version}"

    @property
    def merged(self) -> MergedEngine | None:
        return self._merged

    def pin(self, version: str | None = None) -> ServedAdapter:
        """Take a version for one request, so that it is not unloaded while the request runs.

        The active version goes to the merged engine when its weights hold that version, else through LoRA.
        """
        adapter = self._active if version is None else self._loaded.get(version)
        if adapter is None:
            raise NotFound(f"adapter version {version} is not loaded")
        self._in_flight[adapter.version] += 1
        merged = self._merged
        if merged is not None and adapter.version == self._active.version == merged.serving_version:
            merged.enter()
            return replace(adapter, model=merged.model_name, endpoint=merged.client)
        return adapter

    async def unpin(self, adapter: ServedAdapter) -> None:
        self._in_flight[adapter.version] -= 1
        if adapter.endpoint is not None and self._merged is not None:
            await self._merged.leave()
        async with self._drained:
            self._drained.notify_all()

    def sync_merged(self) -> None:
        """Bring the merged engine's weights to the active version, in the background (it serves meanwhile)."""
        if self._merged is not None:
            self._track(self._follow_with_merged())

    async def _follow_with_merged(self) -> None:
        assert self._merged is not None
        while True:
            version = self._active.version
            path = None if version == BASE_VERSION else self._paths.get(version)
            if version != BASE_VERSION and path is None:
                return  # not loaded here (yet): the next swap brings it
            if not await self._merged.serve(version, path) or self._active.version == version:
                return

    @asynccontextmanager
    async def use(self, version: str | None = None) -> AsyncIterator[ServedAdapter]:
        adapter = self.pin(version)
        try:
            yield adapter
        finally:
            await self.unpin(adapter)

    # --- changing ------------------------------------------------------------------------------
    async def restore(self) -> ServedAdapter:
        """Load the active and previous versions recorded in the store (at start-up, or after vLLM restarted).

        Under the swap lock: a promotion running at the same time either finished first (and the store says so)
        or starts after, so a restore can never put back what a promotion just replaced.
        """
        async with self._swap_lock:
            return await self._restore_locked()

    async def _restore_locked(self) -> ServedAdapter:
        stamp = await asyncio.to_thread(self._active_stamp)
        active, previous = await asyncio.to_thread(self._recorded_versions)
        self._loaded = {BASE_VERSION: self._base}
        for row in (previous, active):
            if row is not None and row.version != BASE_VERSION and row.path:
                try:
                    await self._load(row.version, row.path)
                except EngineRejected as error:
                    log.error("registry.restore_failed version=%s error=%s", row.version, error)
        if active is not None and active.version in self._loaded:
            self._active = self._loaded[active.version]
        else:
            self._active = self._base
        self._previous = self._loaded.get(previous.version) if previous is not None else None
        self._stamp = stamp
        log.info("registry.restored active=%s loaded=%s", self._active.version, self.loaded_versions)
        self.sync_merged()
        return self._active

    async def follow_store(self, *, retry_after_s: float = 10.0) -> bool:
        """Serve what the store says is active, if another process changed it; True when this process switched.

        The new version is loaded (and vLLM confirms it) before the pointer moves, so no request here is sent
        to a name the engine does not know. If it cannot be loaded, this process keeps serving what it served
        and tries again after `retry_after_s`, saying so in the log.
        """
        stamp = await asyncio.to_thread(self._active_stamp)
        if stamp is None or stamp == self._stamp:
            return False
        async with self._swap_lock:
            stamp = await asyncio.to_thread(self._active_stamp)
            if stamp is None or stamp == self._stamp:
                return False  # a promotion here got the lock first and is what the store now says
            failed = self._failed_follow
            if failed is not None and failed[0] == stamp[0] and time.monotonic() - failed[1] < retry_after_s:
                return False
            active, previous = await asyncio.to_thread(self._recorded_versions)
            if active is None:
                return False
            started = time.perf_counter()
            try:
                adapter = self._base if active.version == BASE_VERSION else await self._load_row(active)
            except TuneloopError as error:  # refused, unreachable, no files here: keep serving, try again later
                self._failed_follow = (active.version, time.monotonic())
                log.error("registry.follow_failed version=%s error=%s", active.version, error.message)
                return False
            self._failed_follow = None
            before = self._active
            if previous is not None and previous.version not in self._loaded and previous.path:
                try:  # kept loaded for an instant rollback; serving goes on without it
                    await self._load(previous.version, previous.path)
                except EngineRejected as error:
                    log.warning("registry.follow_previous_failed version=%s error=%s", previous.version, error)
            self._active = adapter
            self._previous = self._loaded.get(previous.version) if previous is not None else None
            self._stamp = stamp
            switched = before.version != adapter.version
            if switched:
                self.last_swap_ms = (time.perf_counter() - started) * 1000
                log.info("registry.followed version=%s previous=%s swap_ms=%.1f", adapter.version, before.version,
                         self.last_swap_ms)  # fmt: skip
            keep = {BASE_VERSION, adapter.version} | ({previous.version} if previous is not None else set())
        self._start_housekeeping(keep)
        if switched:
            self.sync_merged()
        return switched

    async def load(self, version: str) -> ServedAdapter:
        """Make `version` servable (e.g. a candidate for evaluation) without making it active."""
        if version in self._loaded:
            return self._loaded[version]
        row = await asyncio.to_thread(self._version_row, version)
        if row is None:
            raise NotFound(f"adapter version {version} does not exist", hint="List versions with `tuneloop adapters`.")
        return await self._load_row(row)

    async def _load_row(self, row: AdapterVersion) -> ServedAdapter:
        if row.version in self._loaded:
            return self._loaded[row.version]
        if row.pruned_at is not None:
            raise Conflict(
                f"adapter version {row.version} was pruned by retention on {row.pruned_at:%Y-%m-%d}: "
                "its files are gone",
                hint="Promote another version (`tuneloop adapters`); pin versions you may want back "
                "with `tuneloop retention pin VERSION`.",
            )
        if not row.path:
            raise Conflict(f"adapter version {row.version} has no files")
        return await self._load(row.version, row.path)

    async def promote(self, version: str, *, audit: AuditEntry | None = None) -> ServedAdapter:
        """Switch serving to `version` atomically; returns the new active adapter.

        `audit` is written in the same commit as the new active version (its detail gains `active` and
        `previous`): if either cannot be stored, neither is, and the active version does not change.
        """
        async with self._swap_lock:
            started = time.perf_counter()
            adapter = await self.load(version)
            previous = self._active
            stored = asyncio.ensure_future(
                asyncio.to_thread(self._store_active, version, previous=previous.version, audit=audit)
            )
            try:
                self._stamp = await asyncio.shield(stored)
            except asyncio.CancelledError:
                # The commit goes on in its thread: the pointer follows it before the lock is let go.
                self._stamp = await stored
                self._swap(adapter, previous=previous)
                raise
            self._swap(adapter, previous=previous)
            self.last_swap_ms = (time.perf_counter() - started) * 1000
            log.info(
                "registry.promoted version=%s previous=%s swap_ms=%.1f", version, previous.version, self.last_swap_ms
            )
            keep = {BASE_VERSION, adapter.version, previous.version}
        self._start_housekeeping(keep)
        self.sync_merged()
        return adapter

    def _start_housekeeping(self, keep: set[str]) -> None:
        self._track(self._unload_all_but(keep))

    def _track(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._housekeeping.add(task)
        task.add_done_callback(self._housekeeping.discard)

    async def wait_idle(self) -> None:
        """Wait until versions that no longer serve have been unloaded (for shutdown and tests)."""
        while self._housekeeping:
            await asyncio.gather(*self._housekeeping, return_exceptions=True)

    async def rollback(self, version: str | None = None, *, audit: AuditEntry | None = None) -> ServedAdapter:
        """Serve `version`, or when None the version that served before the current one (`audit` as in promote)."""
        if version is None:
            previous = await asyncio.to_thread(self._previous_row)
            if previous is None:
                raise Conflict("there is no earlier version to roll back to")
            version = previous.version
        row = await asyncio.to_thread(self._version_row, version)
        if row is None:
            raise NotFound(f"adapter version {version} does not exist")
        if row.status == AdapterStatus.active:
            raise Conflict(f"{version} is already active")
        return await self.promote(version, audit=audit)

    async def discard(self, version: str) -> None:
        """Unload a version that will not serve (a rejected candidate), once its requests drain."""
        if version in (BASE_VERSION, self._active.version):
            return
        await self._unload(version)

    # --- internals -----------------------------------------------------------------------------
    def _swap(self, adapter: ServedAdapter, *, previous: ServedAdapter) -> None:
        if previous.version != adapter.version:
            self._previous = previous
        self._active = adapter  # the swap itself: new requests pick this up from here on

    def _recorded_versions(self) -> tuple[AdapterVersion | None, AdapterVersion | None]:
        """The active and the previously active versions as the store has them."""
        with session_scope(self._engine) as session:
            adapter_repo.ensure_base_version(session=session)
            active = adapter_repo.get_active_version(session=session)
            previous = adapter_repo.previous_active_version(session=session)
        return active, previous

    def _version_row(self, version: str) -> AdapterVersion | None:
        with session_scope(self._engine) as session:
            return adapter_repo.get_version(session=session, version=version)

    def _previous_row(self) -> AdapterVersion | None:
        with session_scope(self._engine) as session:
            return adapter_repo.previous_active_version(session=session)

    def _active_stamp(self) -> tuple[str, str] | None:
        with session_scope(self._engine) as session:
            return adapter_repo.active_stamp(session=session)

    def _store_active(self, version: str, *, previous: str, audit: AuditEntry | None) -> tuple[str, str] | None:
        """Mark `version` active and store `audit` with it, in one commit; returns the store's new stamp.

        Another process promoting in the same instant makes the unique index refuse one commit: that one is
        tried again on top of the other's, so both promotions happen, one after the other, as each was asked.
        """
        for attempt in range(3):
            try:
                with session_scope(self._engine) as session:
                    adapter_repo.mark_active(session=session, version=version, commit=False)
                    if audit is not None:
                        detail = {**audit.detail, "active": version, "previous": previous}
                        audit_repo.add_audit(session=session, entry=replace(audit, detail=detail))
                    session.commit()
                    return adapter_repo.active_stamp(session=session)
            except IntegrityError:
                if attempt == 2:
                    raise
                log.warning("registry.promote_raced version=%s attempt=%d", version, attempt + 1)
        raise AssertionError("unreachable")

    async def _load(self, version: str, path: str) -> ServedAdapter:
        if not (Path(path) / "adapter_config.json").is_file():
            raise EngineRejected(f"adapter {version} at {path} is missing adapter_config.json")
        adapter = ServedAdapter(version, self.served_name(version))
        resolved = str(Path(path).resolve())
        await self._client.ensure_adapter(name=adapter.model, path=resolved)
        self._loaded[version] = adapter
        self._paths[version] = resolved
        return adapter

    async def _unload_all_but(self, keep: set[str]) -> None:
        for version in [v for v in self._loaded if v not in keep]:
            await self._unload(version)

    async def _unload(self, version: str) -> None:
        adapter = self._loaded.get(version)
        if adapter is None or version == BASE_VERSION:
            return
        async with self._drained:
            await self._drained.wait_for(lambda: self._in_flight[version] == 0)
            if self._active.version == version:
                return  # promoted again while we waited
            self._loaded.pop(version, None)
        try:
            await self._client.unload_adapter(name=adapter.model)
        except Exception as error:  # unloading is housekeeping: log it, never fail the swap for it
            log.warning("registry.unload_failed version=%s error=%s", version, error)
