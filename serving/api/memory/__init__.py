"""The memory feature of the HTTP API: protocol (pydantic I/O) and router."""
