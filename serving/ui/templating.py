"""The dashboard's Jinja2 templates (autoescaped) and the helper that renders a page for a signed-in user."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.responses import HTMLResponse

from serving.ui.sessions import SignedIn

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")


def _when(value: datetime | None) -> str:
    return "—" if value is None else value.strftime("%Y-%m-%d %H:%M UTC")


def _short(value: str | None, limit: int = 280) -> str:
    if value is None:
        return "—"
    return value if len(value) <= limit else value[: limit - 1] + "…"


templates.env.filters["when"] = _when
templates.env.filters["short"] = _short


def page(request: Request, name: str, *, user: SignedIn | None, status_code: int = 200, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(
        request,
        name,
        {
            "user": user,
            "principal": user.principal if user else None,
            "csrf": user.csrf_token if user else "",
            **context,
        },
        status_code=status_code,
    )
