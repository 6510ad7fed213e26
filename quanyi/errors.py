"""Domain errors. Every error a client can see has a stable code and an HTTP status; the web
middleware turns them into `{"error": {"code", "message", ...}}`."""

from __future__ import annotations

from typing import Any


class QuanyiError(Exception):
    status = 500
    code = "internal"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidRequest(QuanyiError):
    status, code = 400, "invalid_request"

    def __init__(self, message: str, fields: dict[str, str] | None = None) -> None:
        super().__init__(message, fields=fields or {})


class Unauthorized(QuanyiError):
    status, code = 401, "unauthorized"


class Forbidden(QuanyiError):
    status, code = 403, "forbidden"


class ChannelNotAllowed(QuanyiError):
    status, code = 403, "channel_not_allowed"


class NotFound(QuanyiError):
    status, code = 404, "not_found"


class CampaignNotFound(NotFound):
    code = "campaign_not_found"


class RewardNotFound(NotFound):
    code = "reward_not_found"


class GrantNotFound(NotFound):
    code = "grant_not_found"


class Conflict(QuanyiError):
    status, code = 409, "conflict"


class IdempotencyConflict(Conflict):
    code = "idempotency_conflict"


class CampaignNotActive(Conflict):
    code = "campaign_not_active"


class OutOfStock(Conflict):
    code = "out_of_stock"


class LimitReached(Conflict):
    code = "limit_reached"


class BudgetExhausted(Conflict):
    code = "budget_exhausted"


class InvalidTransition(Conflict):
    code = "invalid_transition"


class AlreadyExists(Conflict):
    code = "already_exists"


class Unavailable(QuanyiError):
    status, code = 503, "unavailable"
