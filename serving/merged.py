"""The active version at base speed: its adapter merged into the weights of a second vLLM engine.

vLLM's LoRA path costs about half the speed on this CPU, and nearly all traffic goes to one version, the
active one. So the active version is also served by a second engine started without LoRA slots, whose
weights are the base model's with the active adapter folded in (PEFT's merge), loaded in place with vLLM's
`reload_weights`. The LoRA engine keeps the unmerged base: candidates, the gate, imported adapters and the
previous version stay LoRAs on it, and a promotion or rollback is the usual instant pointer swap there.

The merged engine only ever takes traffic for the version its weights hold: the registry routes the active
version here when `serving_version` equals it, and to the LoRA path otherwise (during a reload, after a
swap, while this engine restarts). A reload first stops routing here, waits for the requests on the old
weights to finish, reloads, and only then routes here again, so an answer never comes from weights other
than the version it is recorded under.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from serving.client import InferenceClient
from serving.errors import TuneloopError
from serving.merge import merge_adapter

log = logging.getLogger(__name__)


class MergedEngine:
    """One engine (or a list of replicas, see InferenceClient) serving one version at a time, merged."""

    def __init__(
        self, *, client: InferenceClient, model_name: str, base_model_dir: Path, merged_dir: Path, up: bool = True
    ) -> None:
        self.client = client
        # Whether the engine is known to answer: the service's keeper says so (`started`) once it is healthy,
        # so that nothing tries to reload an engine that is still starting.
        self._up = up
        self.model_name = model_name  # the name the engine serves its weights under
        self._base_model_dir = base_model_dir
        self._merged_dir = merged_dir
        self._serving: str | None = None  # the version its weights hold, once they may take traffic
        self._in_flight = 0
        self._drained = asyncio.Condition()
        self._lock = asyncio.Lock()
        self.last_reload_s: float | None = None

    @property
    def serving_version(self) -> str | None:
        """The version whose traffic may come here now; None while it reloads, restarts or is not up."""
        return self._serving

    @property
    def idle(self) -> bool:
        """No reload under way or waiting."""
        return not self._lock.locked()

    def enter(self) -> None:
        self._in_flight += 1

    async def leave(self) -> None:
        self._in_flight -= 1
        async with self._drained:
            self._drained.notify_all()

    def forget(self) -> None:
        """The engine is down (or restarting): no traffic, and no reload, until it has `started`."""
        self._serving = None
        self._up = False

    def started(self) -> None:
        """The engine answers, with the base weights of a fresh start: no traffic until `serve` says so."""
        self._serving = None
        self._up = True

    async def serve(self, version: str, adapter_path: str | None) -> bool:
        """Make the engine's weights `version` (None path: the base model); True when it now serves it.

        Failures are logged and leave the engine out of the traffic: the LoRA path serves meanwhile.
        """
        async with self._lock:
            if self._serving == version:
                return True
            if not self._up:
                return False  # its keeper brings it to the active version once it is up
            self._serving = None  # from here on, new requests for any version take the LoRA path
            async with self._drained:
                await self._drained.wait_for(lambda: self._in_flight == 0)
            started = time.perf_counter()
            try:
                folder = await asyncio.to_thread(self._merged_folder, version, adapter_path)
                await self.client.reload_weights(path=str(folder))
            except (TuneloopError, OSError, ValueError) as error:
                message = error.message if isinstance(error, TuneloopError) else f"{type(error).__name__}: {error}"
                log.error("merged.reload_failed version=%s error=%s", version, message)
                return False
            self.last_reload_s = time.perf_counter() - started
            self._serving = version
            log.info("merged.serving version=%s reload_s=%.1f", version, self.last_reload_s)
            return True

    def _merged_folder(self, version: str, adapter_path: str | None) -> Path:
        if adapter_path is None:
            return self._base_model_dir
        folder = self._merged_dir / version
        if not (folder / "config.json").is_file():  # merged once per version, kept for a rollback
            merge_adapter(base_dir=self._base_model_dir, adapter_dir=Path(adapter_path), out_dir=folder)
        return folder
