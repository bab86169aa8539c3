"""The adapter registry: which LoRA version serves, hot-swapped without failing a request.

Every version is loaded into vLLM under its own name (`tuneloop-v0001`, ...), because reloading under
one name serves stale answers from the prefix cache. Switching is a pointer swap under a lock; the
previous version stays loaded so that a rollback is instant, and older ones are unloaded only after
the requests running on them have finished. A switch and its audit event are stored in one commit.
Store reads and writes run in worker threads; a switch still happens whole under the swap lock.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from sqlalchemy import Engine

from serving.client import InferenceClient
from serving.errors import Conflict, EngineRejected, NotFound
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


class AdapterRegistry:
    def __init__(self, *, client: InferenceClient, engine: Engine, base_model_name: str, prefix: str = "tuneloop-"):
        self._client = client
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

    def pin(self, version: str | None = None) -> ServedAdapter:
        """Take a version for one request, so that it is not unloaded while the request runs."""
        adapter = self._active if version is None else self._loaded.get(version)
        if adapter is None:
            raise NotFound(f"adapter version {version} is not loaded")
        self._in_flight[adapter.version] += 1
        return adapter

    async def unpin(self, adapter: ServedAdapter) -> None:
        self._in_flight[adapter.version] -= 1
        async with self._drained:
            self._drained.notify_all()

    @asynccontextmanager
    async def use(self, version: str | None = None) -> AsyncIterator[ServedAdapter]:
        adapter = self.pin(version)
        try:
            yield adapter
        finally:
            await self.unpin(adapter)

    # --- changing ------------------------------------------------------------------------------
    async def restore(self) -> ServedAdapter:
        """Load the active and previous versions recorded in the store (at start-up, or after vLLM restarted)."""
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
        log.info("registry.restored active=%s loaded=%s", self._active.version, self.loaded_versions)
        return self._active

    async def load(self, version: str) -> ServedAdapter:
        """Make `version` servable (e.g. a candidate for evaluation) without making it active."""
        if version in self._loaded:
            return self._loaded[version]
        row = await asyncio.to_thread(self._version_row, version)
        if row is None:
            raise NotFound(f"adapter version {version} does not exist", hint="List versions with `tuneloop adapters`.")
        if row.pruned_at is not None:
            raise Conflict(
                f"adapter version {version} was pruned by retention on {row.pruned_at:%Y-%m-%d}: its files are gone",
                hint="Promote another version (`tuneloop adapters`); pin versions you may want back "
                "with `tuneloop retention pin VERSION`.",
            )
        if not row.path:
            raise Conflict(f"adapter version {version} has no files")
        return await self._load(version, row.path)

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
                await asyncio.shield(stored)
            except asyncio.CancelledError:
                # The commit goes on in its thread: the pointer follows it before the lock is let go.
                await stored
                self._swap(adapter, previous=previous)
                raise
            self._swap(adapter, previous=previous)
            self.last_swap_ms = (time.perf_counter() - started) * 1000
            log.info(
                "registry.promoted version=%s previous=%s swap_ms=%.1f", version, previous.version, self.last_swap_ms
            )
            keep = {BASE_VERSION, adapter.version, previous.version}
        task = asyncio.create_task(self._unload_all_but(keep))
        self._housekeeping.add(task)
        task.add_done_callback(self._housekeeping.discard)
        return adapter

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

    def _store_active(self, version: str, *, previous: str, audit: AuditEntry | None) -> None:
        """Mark `version` active and store `audit` with it, in one commit."""
        with session_scope(self._engine) as session:
            adapter_repo.mark_active(session=session, version=version, commit=False)
            if audit is not None:
                detail = {**audit.detail, "active": version, "previous": previous}
                audit_repo.add_audit(session=session, entry=replace(audit, detail=detail))
            session.commit()

    async def _load(self, version: str, path: str) -> ServedAdapter:
        if not (Path(path) / "adapter_config.json").is_file():
            raise EngineRejected(f"adapter {version} at {path} is missing adapter_config.json")
        adapter = ServedAdapter(version, self.served_name(version))
        resolved = str(Path(path).resolve())
        try:
            await self._client.load_adapter(name=adapter.model, path=resolved)
        except EngineRejected as error:
            if "already been loaded" not in error.message:
                raise
            # Loaded earlier (we restarted, vLLM did not): reuse it only if it is the same files.
            served = {m["id"]: m.get("root") for m in await self._client.list_models()}
            if served.get(adapter.model) != resolved:
                await self._client.unload_adapter(name=adapter.model)
                await self._client.load_adapter(name=adapter.model, path=resolved)
        self._loaded[version] = adapter
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
