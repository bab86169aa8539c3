"""Serving: the vLLM engine process, the inference client, the adapter registry and the HTTP API."""
