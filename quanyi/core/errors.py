"""Domain errors. Every error a client can see has a stable code and an HTTP status; the web
middleware turns them into `{"error": {"code", "message", ...}}`."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from quanyi.core.logs import redact


class QuanyiError(Exception):
    status = 500
    code = "internal"
    # HTTP headers the response carries besides the JSON body (Retry-After, ...).
    headers: Mapping[str, str] = MappingProxyType({})

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidRequest(QuanyiError):
    status, code = 400, "invalid_request"

    def __init__(self, message: str, fields: dict[str, str] | None = None) -> None:
        super().__init__(message, fields=fields or {})


class InvalidLines(InvalidRequest):
    """A file refused as a whole for its bad lines (details: `errors`, the first of them as
    {line, reason}, never with the value; `rejected`, how many)."""

    def __init__(self, message: str, errors: list[dict[str, Any]], rejected: int) -> None:
        super().__init__(message)
        self.details.update(errors=errors, rejected=rejected)

    def __reduce__(self) -> Any:
        return (type(self), (self.message, self.details["errors"], self.details["rejected"]))


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


class GrantNotLive(Conflict):
    """The grant is in a final state (revoked, expired, failed): the transition asked for
    cannot happen."""

    code = "grant_not_live"


class GrantNotFulfilled(Conflict):
    """A vendor reports a redemption of a grant whose fulfilment is not recorded yet: the
    vendor retries later."""


class RedemptionRefused(Conflict):
    """A vendor's redemption that was recorded as refused (details: redemption_id, grant_id);
    a retry of it is refused the same way."""

    def __init__(self, reason: str, redemption_id: str, grant_id: str | None) -> None:
        super().__init__(
            f"redemption refused: {reason}", redemption_id=redemption_id, grant_id=grant_id
        )


class GrantUnknown(RedemptionRefused):
    code = "grant_unknown"


class GrantNotRedeemable(RedemptionRefused):
    """Redeemed by another redemption already, expired, revoked or failed."""

    code = "grant_not_redeemable"


class IdempotencyConflict(Conflict):
    code = "idempotency_conflict"


class CampaignNotActive(Conflict):
    code = "campaign_not_active"


class NotEligible(Conflict):
    """The customer may not have the reward: not in its audience, or its goal is not met."""

    code = "not_eligible"


class OutOfStock(Conflict):
    code = "out_of_stock"


class LimitReached(Conflict):
    code = "limit_reached"


class BudgetExhausted(Conflict):
    code = "budget_exhausted"


class BudgetExceeded(Conflict):
    """A branch's budget for a period has less left than asked: an approval's reservation,
    an allocation to a child, a reclaim (details: branch, period, available, needed, in fen)."""

    code = "budget_exceeded"

    def __init__(self, message: str, branch: str, period: str, available: int, needed: int) -> None:
        super().__init__(message, branch=branch, period=period, available=available, needed=needed)


class BudgetRequired(Conflict):
    """Budgets are in force for the period of the campaign's start: it needs a budget to be
    approved (QUANYI_BUDGET_REQUIRED; details: branch, period)."""

    code = "budget_required"

    def __init__(self, message: str, branch: str, period: str) -> None:
        super().__init__(message, branch=branch, period=period)


class InvalidTransition(Conflict):
    code = "invalid_transition"


class AlreadyExists(Conflict):
    code = "already_exists"


class RightInUse(Conflict):
    """A right that live campaigns pay out changes only once none uses it (details: campaigns)."""

    code = "right_in_use"


class RightNotAdmitted(Conflict):
    """A campaign names a right that is not admitted (准入) to the catalog: proposed, suspended
    or retired (details: rights, each {right_id, state})."""

    code = "right_not_admitted"


class VendorNotActive(Conflict):
    """A right cannot be admitted, or resumed, on a vendor that is not active (details:
    vendor_id, state)."""

    code = "vendor_not_active"


class VendorInUse(Conflict):
    """Where a vendor is reached and how (base URL, adapter) stays put while live campaigns
    route rewards to it (details: campaigns); a vendor is offboarded only once no admitted or
    suspended right names it (details: rights)."""

    code = "vendor_in_use"


class PayloadTooLarge(QuanyiError):
    """A body over the limit of its endpoint, refused before the rest of it is read."""

    status, code = 413, "payload_too_large"


class TooManyAttempts(QuanyiError):
    """Too many failed logins for one username lately; says when the next try may come."""

    status, code = 429, "too_many_attempts"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message, retry_after_s=retry_after_s)
        self.headers = {"Retry-After": str(retry_after_s)}


class TooManyRequests(QuanyiError):
    """A bounded resource is taken (statement uploads in flight); says when to try again."""

    status, code = 429, "too_many_requests"

    def __init__(self, message: str, retry_after_s: int, **details: Any) -> None:
        super().__init__(message, retry_after_s=retry_after_s, **details)
        self.headers = {"Retry-After": str(retry_after_s)}


class Unavailable(QuanyiError):
    status, code = 503, "unavailable"


class StoreNotReady(Unavailable):
    """Redis lost its data and is not restored from the ledger yet (its store-ready marker is
    missing): no claim or transition is decided until `quanyi rebuild-redis` ran."""

    headers = MappingProxyType({"Retry-After": "5"})

    def __init__(self, message: str = "") -> None:
        super().__init__(
            message or "the rights store is being restored from the ledger; retry in a few seconds",
            reason="store_not_ready",
        )


class SecretsKeyError(QuanyiError):
    """The secrets key (QUANYI_SECRETS_KEY) cannot be read, or it does not open a stored
    secret: the service refuses to start, a command refuses to run."""

    code = "secrets_key"


class StartupError(RuntimeError):
    """A dependency is missing or unsafe: the service refuses to start. The message is printed
    and logged: credentials and card numbers in it are masked."""

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))
