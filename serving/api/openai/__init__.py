"""The OpenAI-compatible feature of the HTTP API: protocol (pydantic I/O), the answer stream, and router."""
