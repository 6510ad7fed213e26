"""What every Locust user of the load test shares: the tally of what the clients saw (one
process: `python -m loadtests.run` reads it back from the summary), request ids, settings from
LOADTEST_* variables, and how an error answer reads."""

from __future__ import annotations

import os
import secrets
from collections import Counter
from typing import Any


def new_id() -> str:
    """A request or redemption id. Not uuid4().hex: one in a few hundred of those holds a run
    of 13+ digits that passes the Luhn check, which the API refuses as a possible card number."""
    return "r" + secrets.token_urlsafe(16)


def env(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default)
    if value is None:
        raise SystemExit(f"locustfile: set {name} (see loadtests/scenario.py)")
    return value


class Tally:
    """What the clients saw: outcomes per campaign, the grant ids they were given, what claims
    that waited came back as, the codes of those fulfilled and the grants redeemed."""

    def __init__(self) -> None:
        self.outcomes: dict[str, Counter[str]] = {}
        self.grants: dict[str, set[str]] = {}
        self.waited: Counter[str] = Counter()
        self.codes: dict[str, str] = {}
        self.redeemed: set[str] = set()
        self.redemption_replays = 0
        self.logins: Counter[str] = Counter()
        self.statements = 0
        self.statement_bytes = 0
        self.statements_refused = 0

    def count(self, campaign_id: str, outcome: str) -> None:
        self.outcomes.setdefault(campaign_id, Counter())[outcome] += 1

    def granted(self, campaign_id: str, grant_id: str) -> None:
        self.count(campaign_id, "granted")
        self.grants.setdefault(campaign_id, set()).add(grant_id)


TALLY = Tally()


def json_body(resp: Any) -> Any:
    try:
        return resp.json()
    except (ValueError, TypeError):
        return None


def error_code(resp: Any) -> str:
    data = json_body(resp) if resp.status_code else None
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        return str(data["error"].get("code"))
    return "none"


def describe(resp: Any, code: str) -> str:
    if not resp.status_code:  # no HTTP answer at all: refused, reset, timed out
        return f"connection error: {resp.error!r}"
    return f"HTTP {resp.status_code} {code}"
