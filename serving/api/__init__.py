"""HTTP API: FastAPI routers, one module per feature, each with attach_router(app)."""
