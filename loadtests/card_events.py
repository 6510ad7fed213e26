"""The card system as a Locust user: card transactions of the goal campaign's customers in
batches, signed by its own channel (scope events), with repeats, refunds and refunds that
overtake their purchase. Run by loadtests/locustfile.py, which imports it; the audit checks what
it made against the ledger's card events (loadtests/goal_audit.py)."""

from __future__ import annotations

import json
import random
import time
from collections import deque
from datetime import UTC, datetime
from typing import Any

import gevent
from locust import FastHttpUser, between, task

from loadtests import scenario as sc
from loadtests.clients import TALLY, describe, env, error_code, json_body, new_id
from quanyi.access.signing import signed_headers

EVENTS = "/v1/events"
# A batch of card events, and what share of its events repeat one sent before (the card system
# resending), reverse one sent before (a refund), or reverse one it has not sent yet (the
# refund overtakes its purchase: held, then the purchase counts for nothing, if the purchase
# could count toward the goal; else it is accepted as counting nowhere, and not held).
EVENT_BATCH = 100
REPEATS, REVERSALS, EARLY_REVERSALS = 0.10, 0.05, 0.01
# Users of the stream and the offers page start this long (s) after being spawned: one storm of
# 50 users connecting at once slows the first request of each by seconds on this box, and with
# a few hundred requests in a run two such firsts are already the p99.
STAGGER_S = (1.0, 3.0)
# Amounts in fen: three of five meet the goal's min_amount (100 yuan).
AMOUNTS = (5_000, 8_000, 12_000, 15_000, 30_000)
MCCS = ("5812", "5411", "5999", "4511")
DEFAULTS = sc.scenario(short=True)


class EventStreamUser(FastHttpUser):
    """The card system: card transactions of the goal campaign's customers in batches, signed
    by its own channel (scope events). Every event must come back accepted or duplicate, a
    refund that overtook its purchase held; the grants the goal made are tallied for the
    audit, which checks them against the ledger's card events."""

    # Few and unhurried: a batch costs Locust's one core far more than a claim does, and a
    # saturated load generator reports its own delays as the API's latency.
    fixed_count = 2
    wait_time = between(0.2, 0.5)
    network_timeout = 10.0
    connection_timeout = 5.0

    def on_start(self) -> None:
        gevent.sleep(random.uniform(*STAGGER_S))
        self.channel_id = env(sc.ENV_EVENTS_CHANNEL_ID)
        self.secret = env(sc.ENV_EVENTS_CHANNEL_SECRET)
        self.campaign_id = env(sc.ENV_GOAL_CAMPAIGN, DEFAULTS.goal.id)
        self.customers = int(env(sc.ENV_GOAL_CUSTOMERS, str(DEFAULTS.goal.customers)))
        # Event ids "<prefix>-<n>": one user's never meet another's, and within a batch n grows
        # in the batch's order (the purchases an early refund held back were made before any
        # new event), which the goal audit orders a batch's events by.
        self.prefix = new_id()
        self.made = 0
        # Purchases sent and not reversed (what a repeat or a refund picks from), and those
        # whose refund went first, to send in the next batch.
        self.sent: deque[dict[str, Any]] = deque(maxlen=500)
        self.later: list[dict[str, Any]] = []

    def _event(self, **fields: Any) -> dict[str, Any]:
        self.made += 1
        return {
            "event_id": f"{self.prefix}-{self.made}",
            "type": "card_transaction",
            "occurred_at": datetime.now(UTC).isoformat(),
            **fields,
        }

    def _purchase(self) -> dict[str, Any]:
        customer = sc.customer_id(sc.GOAL_PREFIX, random.randrange(self.customers))
        return self._event(
            customer_id=customer, amount=random.choice(AMOUNTS), mcc=random.choice(MCCS)
        )

    def _refund(self, original: dict[str, Any]) -> dict[str, Any]:
        return self._event(
            customer_id=original["customer_id"],
            amount=original["amount"],
            mcc=original["mcc"],
            reversal_of=original["event_id"],
        )

    def _batch(self) -> tuple[list[dict[str, Any]], dict[str, bool]]:
        """The next batch, and the ids in it of refunds that overtake their purchase, each
        with whether it must be held: only a refund of a purchase the goal could count waits
        for it (record_events.lua); one below the goal's amount counts nowhere either way."""
        batch: list[dict[str, Any]] = self.later
        early: dict[str, bool] = {}
        self.later = []
        while len(batch) < EVENT_BATCH:
            draw = random.random()
            if draw < REPEATS and self.sent:
                batch.append(random.choice(self.sent))
            elif draw < REPEATS + REVERSALS and self.sent:
                original = self.sent[random.randrange(len(self.sent))]
                self.sent.remove(original)  # never refunded twice, never repeated after
                batch.append(self._refund(original))
            elif draw < REPEATS + REVERSALS + EARLY_REVERSALS:
                original = self._purchase()
                refund = self._refund(original)
                batch.append(refund)
                early[refund["event_id"]] = original["amount"] >= sc.GOAL["min_amount"]
                self.later.append(original)
            else:
                purchase = self._purchase()
                batch.append(purchase)
                self.sent.append(purchase)
        return batch, early

    @task
    def stream(self) -> None:
        batch, early = self._batch()
        body = json.dumps({"events": batch}).encode()
        headers = signed_headers(
            self.channel_id, self.secret, "POST", EVENTS, int(time.time()), body
        )
        headers["Content-Type"] = "application/json"
        with self.client.request(
            "POST",
            EVENTS,
            data=body,
            headers=headers,
            name=f"{EVENTS} (batch of {EVENT_BATCH})",
            catch_response=True,
        ) as resp:
            if resp.status_code != 200:
                resp.failure(describe(resp, error_code(resp)))
                return
            data = json_body(resp)
            results = data.get("results") if isinstance(data, dict) else None
            if not isinstance(results, list) or len(results) != len(batch):
                resp.failure(f"results unexpected: {resp.text[:200]!r}")
                return
            problem = self._judge(batch, results, early)
            if problem:
                resp.failure(problem)
            else:
                resp.success()

    def _judge(
        self, batch: list[dict[str, Any]], results: list[dict[str, Any]], early: dict[str, bool]
    ) -> str | None:
        for event, result in zip(batch, results, strict=True):
            status = result.get("status")
            if result.get("event_id") != event["event_id"]:
                return f"result of {result.get('event_id')} in the place of {event['event_id']}"
            if status not in ("accepted", "duplicate"):
                return f"event {event['event_id']} {status}: {result.get('error')}"
            must_hold = early.get(event["event_id"])
            if must_hold is not None and bool(result.get("held")) != must_hold:
                return (
                    f"refund {event['event_id']} of {event['amount']} fen came before its"
                    f" purchase and was {'not ' if must_hold else ''}held"
                )
            TALLY.count(self.campaign_id, f"event {'held' if result.get('held') else status}")
            for grant_id in result.get("granted") or ():
                TALLY.granted(self.campaign_id, grant_id)
        return None
