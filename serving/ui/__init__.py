"""The web dashboard at /ui: server-rendered pages (Jinja2), plots drawn on the server (pygal SVG), no build step.

Sign-in takes a tuneloop API token and opens a session (serving.ui.sessions); pages read through the store's
repository functions and act through the same services as the API (FeedbackService, ReviewedMemory,
AdminService), so roles and audit are the API's.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from serving.api.deps import Services
from serving.ui.cache import Recent
from serving.ui.errors import attach_error_pages
from serving.ui.headers import DashboardHeaders
from serving.ui.routes import audit, feedback, overview, progress, review, signin, versions
from serving.ui.sessions import DashboardSessions
from serving.ui.templating import HERE


def attach_dashboard(app: FastAPI, services: Services) -> None:
    app.state.dashboard_sessions = DashboardSessions(engine=services.engine, access=services.access)
    app.state.dashboard_recent = Recent()
    app.mount("/ui/static", StaticFiles(directory=HERE / "static"), name="ui-static")
    for feature in (signin, overview, review, versions, feedback, audit, progress):
        app.include_router(feature.router)
    attach_error_pages(app)
    app.add_middleware(DashboardHeaders)
