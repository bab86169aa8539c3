"""Errors of the serving layer.

TuneloopError
 ├── EngineUnavailable      vLLM is down, starting, or timed out: retry later
 ├── EngineRejected         vLLM answered with an error (e.g. an adapter it refuses)
 ├── InvalidQuestion        empty, over the size limit, or (a correction) holding a credential
 ├── InvalidRequest         parameters that are valid alone but not together
 ├── InvalidAdapter         an adapter folder to import that the served base model or vLLM cannot take
 ├── NotFound               an interaction, correction, version or run id that does not exist
 ├── Conflict               a state that forbids the action (a correction already reviewed, a cycle running)
 ├── Unauthenticated        no credential, or one that is unknown or revoked
 ├── Forbidden              the user lacks the role the action needs
 └── TooLarge               a request body over the size limit
"""

from __future__ import annotations


class TuneloopError(Exception):
    status_code = 500
    code = "internal_error"

    def __init__(self, message: str, *, hint: str | None = None, interaction_id: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        # Set when the failed request was still recorded, so the caller can cite it.
        self.interaction_id = interaction_id


class EngineUnavailable(TuneloopError):
    status_code = 503
    code = "engine_unavailable"


class EngineRejected(TuneloopError):
    status_code = 502
    code = "engine_rejected"


class InvalidQuestion(TuneloopError):
    status_code = 422
    code = "invalid_question"


class InvalidRequest(TuneloopError):
    status_code = 422
    code = "invalid_request"  # the code of the envelope's schema validation errors too


class InvalidAdapter(TuneloopError):
    status_code = 422
    code = "invalid_adapter"


class NotFound(TuneloopError):
    status_code = 404
    code = "not_found"


class Conflict(TuneloopError):
    status_code = 409
    code = "conflict"


class Forbidden(TuneloopError):
    status_code = 403
    code = "forbidden"


class Unauthenticated(TuneloopError):
    status_code = 401
    code = "unauthenticated"


class TooLarge(TuneloopError):
    status_code = 413
    code = "too_large"
