"""Build the FastAPI app from ready services; the composition root owns start-up and shutdown."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from fastapi import FastAPI

from serving.api.admin import router as admin
from serving.api.deps import Services
from serving.api.errors import BodyLimit, attach_error_handlers
from serving.api.health import router as health
from serving.api.interactions import router as interactions
from serving.api.memory import router as memory
from serving.api.metrics import router as metrics
from serving.api.openai import router as openai_compat
from serving.ui import attach_dashboard

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def build_api(services: Services, *, lifespan: Lifespan | None = None, max_body_bytes: int = 1_000_000) -> FastAPI:
    app = FastAPI(title="tuneloop", version="0.1.0", lifespan=lifespan)
    app.state.services = services
    attach_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    for feature in (health, openai_compat, interactions, memory, admin, metrics):
        feature.attach_router(app)
    attach_dashboard(app, services)
    return app


__all__ = ["build_api"]
