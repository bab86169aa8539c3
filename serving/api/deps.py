"""The services the routers use, held on app.state and reached through Depends."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import Engine

from serving.access import AccessPolicy
from serving.admin import AdminService
from serving.answers import AnswerService
from serving.client import InferenceClient
from serving.credentials import Authenticator
from serving.feedback import FeedbackService
from serving.memory import ReviewedMemory
from serving.metrics import ServiceMetrics
from serving.registry import AdapterRegistry

DatasetExporter = Callable[[], Awaitable[dict[str, list[dict[str, Any]]]]]


@dataclass(kw_only=True)
class Services:
    engine: Engine
    client: InferenceClient
    registry: AdapterRegistry
    answers: AnswerService
    feedback: FeedbackService
    admin: AdminService
    access: AccessPolicy
    authenticator: Authenticator
    memory: ReviewedMemory
    metrics: ServiceMetrics
    export_datasets: DatasetExporter | None = None
    info: dict[str, Any] = field(default_factory=dict)
    # Set once vLLM is healthy and the active adapter is loaded; /healthz reports 503 before.
    ready: asyncio.Event = field(default_factory=asyncio.Event)


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
