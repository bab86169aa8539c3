"""The metrics feature of the HTTP API: Prometheus text for admins, ours and vLLM's, and router."""
