"""Build the FastAPI app from ready services; the composition root owns start-up and shutdown."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from fastapi import FastAPI

from serving.api import admin, health, interactions, openai_compat
from serving.api.deps import Services
from serving.api.errors import attach_error_handlers

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def build_api(services: Services, *, lifespan: Lifespan | None = None) -> FastAPI:
    app = FastAPI(title="tuneloop", version="0.1.0", lifespan=lifespan)
    app.state.services = services
    attach_error_handlers(app)
    for feature in (health, openai_compat, interactions, admin):
        feature.attach_router(app)
    return app


__all__ = ["build_api"]
