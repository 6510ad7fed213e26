"""What the staff API of vendor operations takes and answers: circuit health, code-pool levels,
dead letters and their redrive (quanyi/vendors/operations_api.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field

from quanyi.core.schemas import Body, Ident, Reply, TextRule
from quanyi.issuance.model import Limit

CircuitState = Literal["closed", "half_open", "open", "unknown"]
GrantIdText = Annotated[str, TextRule(64)]  # one that names no dead letter is reported as such


class VendorHealthReply(Reply):
    """A vendor's circuit as the fulfilment worker that last wrote it sees it."""

    vendor_id: str
    state: CircuitState = Field(description="unknown: no live worker has published it")
    failures: int | None = Field(description="failed calls in a row")
    opened_at: datetime | None = Field(description="when the circuit last opened")
    updated_at: datetime | None
    worker: str | None = Field(description="the fulfilment worker that wrote it")


class VendorsHealthReply(Reply):
    vendors: list[VendorHealthReply]


class CodePoolLevel(Reply):
    right_id: str
    codes: int = Field(description="codes left in the pool")
    demand: int = Field(description="grants the vendor's live campaigns may still make")
    low: bool = Field(description="fewer codes than demand")


class CodePoolsReply(Reply):
    vendor_id: str
    pools: list[CodePoolLevel]


class DeadLettersQuery(Body):
    vendor_id: Ident | None = None
    limit: Limit = Field(100, description="How many, oldest first")


class DeadLetter(Reply):
    id: str
    grant_id: str
    vendor_id: str
    attempts: int
    error: str
    at: str


class DeadLettersReply(Reply):
    dead_letters: list[DeadLetter]


class RedriveBody(Body):
    grant_ids: list[GrantIdText] = Field(min_length=1, max_length=500)


class RedriveOutcome(Reply):
    grant_id: str
    outcome: str = Field(description="redriven, not redriven: STATE, or not dead-lettered")


class RedriveReply(Reply):
    results: list[RedriveOutcome]
    redriven: int
