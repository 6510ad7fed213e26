"""Locust users for the channel API: a flash sale on one hot campaign and steady issuance with
reads, claims that wait for their fulfilment, and redemptions the simulated vendor reports back
through signed callbacks; the card system streaming card events toward a goal campaign (with
repeats, refunds and refunds that come before their purchase), and channels reading what a
customer can have and how far they are. Every channel request is signed for the exact path it
goes to. Beside
them, two hostile or heavy neighbours the claims must not feel: a login flood (wrong passwords)
and a vendor uploading multi-megabyte signed statements.

Normally started by `python -m loadtests.run`, which creates the campaigns and passes their ids
in LOADTEST_* variables (see loadtests/scenario.py). By hand, against a running service:

    LOADTEST_CHANNEL_ID=... LOADTEST_CHANNEL_SECRET=... LOADTEST_FLASH_CAMPAIGN=... \\
    LOADTEST_STEADY_CAMPAIGN=... LOADTEST_SIM_URL=http://127.0.0.1:8099 \\
    locust -f loadtests/locustfile.py --host http://127.0.0.1:8080

(from the repository root, which Locust puts on the import path.) The channel users are here,
the neighbours in loadtests/neighbours.py, the card system in loadtests/card_events.py, what
they share in loadtests/clients.py.

Single process only: the outcome tally and the summary live in this process.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections import deque
from typing import Any

import gevent
from locust import FastHttpUser, between, events, task
from locust.env import Environment

from loadtests import scenario as sc

# Locust runs every user class it finds in this module, these included.
from loadtests.card_events import EVENTS, STAGGER_S, EventStreamUser  # noqa: F401
from loadtests.clients import TALLY, describe, env, error_code, json_body, new_id
from loadtests.neighbours import SLA_EXEMPT, LoginFloodUser, StatementUploadUser  # noqa: F401
from quanyi.access.signing import signed_headers

log = logging.getLogger("loadtests")

CLAIMS = "/v1/claims"
REDEEM = "/_sim/redeem"
# What a claim that waited for its fulfilment may come back as: fulfilled in time, or not yet.
WAITED_STATUSES = frozenset({"granted", "fulfilled"})
# What a read may show of a grant the client was told is in the key state: never an earlier one.
LATER_STATUSES = {
    "fulfilled": frozenset({"fulfilled", "redeemed", "expired"}),
    "redeemed": frozenset({"redeemed"}),
}
# Campaign ids and pool sizes when not given: those `loadtests.run --short` creates.
DEFAULTS = sc.scenario(short=True)


class ChannelUser(FastHttpUser):
    """A channel's client: signs each request, sorts answers into business outcomes and
    failures."""

    abstract = True
    # Bounded, so a stuck request shows up as a failure rather than stalling the run.
    network_timeout = 10.0
    connection_timeout = 5.0

    def on_start(self) -> None:
        self.channel_id = env(sc.ENV_CHANNEL_ID)
        self.secret = env(sc.ENV_CHANNEL_SECRET)

    def _headers(self, method: str, path: str, body: bytes) -> dict[str, str]:
        headers = signed_headers(self.channel_id, self.secret, method, path, int(time.time()), body)
        if body:
            headers["Content-Type"] = "application/json"
        return headers

    def claim(
        self,
        label: str,
        campaign_id: str,
        customer_id: str,
        reward_id: str | None = None,
        request_id: str | None = None,
        wait_ms: int | None = None,
    ) -> dict[str, Any] | None:
        """One claim; the grant when one was given (201) or replayed (200), else None. With
        `wait_ms` (sent for the vendor's campaign only), a new grant must come back granted, or
        fulfilled with the vendor's code."""
        payload: dict[str, Any] = {
            "request_id": request_id or new_id(),
            "campaign_id": campaign_id,
            "customer_id": customer_id,
        }
        if reward_id:
            payload["reward_id"] = reward_id
        if wait_ms:
            payload["wait_ms"] = wait_ms
        body = json.dumps(payload).encode()
        with self.client.request(
            "POST",
            CLAIMS,
            data=body,
            headers=self._headers("POST", CLAIMS, body),
            name=f"{CLAIMS} ({label})",
            catch_response=True,
        ) as resp:
            if resp.status_code in (200, 201):
                grant = json_body(resp)
                if grant is None or grant.get("campaign_id") != campaign_id:
                    resp.failure(f"grant body unexpected: {resp.text[:200]!r}")
                    return None
                if (resp.status_code == 200) != bool(grant.get("replayed")):
                    resp.failure(f"status {resp.status_code} with replayed={grant.get('replayed')}")
                    return None
                if resp.status_code == 201:
                    TALLY.granted(campaign_id, grant["grant_id"])
                    if wait_ms and not _waited_well(resp, grant):
                        return None
                else:
                    TALLY.count(campaign_id, "replayed")
                resp.success()
                return grant
            code = error_code(resp)
            if resp.status_code == 409 and code in sc.BUSINESS_REFUSALS:
                TALLY.count(campaign_id, code)
                resp.success()
                return None
            TALLY.count(campaign_id, f"failed:{resp.status_code}:{code}")
            resp.failure(describe(resp, code))
            return None

    def retry(
        self, grant: dict[str, Any], customer_id: str, request_id: str, reward_id: str | None = None
    ) -> None:
        """The same request again, as after a lost response: it must give back the same grant,
        never a new one nor a refusal, even once the stock is gone."""
        again = self.claim("retry", grant["campaign_id"], customer_id, reward_id, request_id)
        if again is None:
            self.mismatch("retry", f"request {request_id} of grant {grant['grant_id']} refused")
        elif again["grant_id"] != grant["grant_id"]:
            self.mismatch("retry", f"{grant['grant_id']} then {again['grant_id']}")

    def mismatch(self, what: str, detail: str) -> None:
        """Reported as a failed pseudo-request, so it counts against the run like any failure."""
        events.request.fire(
            request_type="CHECK",
            name=what,
            response_time=0,
            response_length=0,
            exception=AssertionError(detail),
            context={},
        )

    def get(self, path: str, name: str) -> dict[str, Any] | None:
        with self.client.request(
            "GET", path, headers=self._headers("GET", path, b""), name=name, catch_response=True
        ) as resp:
            if resp.status_code == 200:
                data = json_body(resp)
                if data is None:
                    resp.failure("200 without a JSON body")
                return data
            resp.failure(describe(resp, error_code(resp)))
            return None


def _waited_well(resp: Any, grant: dict[str, Any]) -> bool:
    """A claim that waited: fulfilled with a code, or still granted; tallied either way."""
    status = grant.get("status")
    TALLY.waited[str(status)] += 1
    if status not in WAITED_STATUSES:
        resp.failure(f"waited claim came back {status!r}")
        return False
    if status == "fulfilled":
        if not grant.get("code"):
            resp.failure("fulfilled without a code")
            return False
        TALLY.codes[grant["grant_id"]] = grant["code"]
    return True


def _redemption_problem(resp: Any, grant_id: str, replay: bool) -> str | None:
    """Why the simulator's report of our callback answer is wrong, or None when it is right."""
    if resp.status_code != 200:
        return f"simulator: {describe(resp, error_code(resp))}"
    report = json_body(resp)
    if not isinstance(report, dict) or not isinstance(report.get("body"), dict):
        return f"simulator report unexpected: {resp.text[:200]!r}"
    answer = report["body"]
    if report.get("status") != 200:
        return f"callback answered HTTP {report.get('status')}: {str(answer)[:200]}"
    if answer.get("status") != "redeemed" or answer.get("grant_id") != grant_id:
        return f"callback answer unexpected: {str(answer)[:200]}"
    if bool(answer.get("replayed")) != replay:
        return f"callback replayed={answer.get('replayed')}, expected {replay}"
    return None


class FlashSaleUser(ChannelUser):
    """Hammers the hot campaign. Its stock is small against demand and customers come back, so
    most answers are out_of_stock or limit_reached once the first seconds are over."""

    weight = 3
    wait_time = between(0.005, 0.05)

    def on_start(self) -> None:
        super().on_start()
        self.campaign_id = env(sc.ENV_FLASH_CAMPAIGN, DEFAULTS.flash.id)
        self.customers = int(env(sc.ENV_FLASH_CUSTOMERS, str(DEFAULTS.flash.customers)))

    @task
    def claim_hot(self) -> None:
        customer = sc.customer_id(sc.FLASH_PREFIX, random.randrange(self.customers))
        request_id = new_id()
        # No reward_id: a one-reward campaign picks it, which is what most channels send.
        grant = self.claim("flash", self.campaign_id, customer, request_id=request_id)
        if grant is not None and random.random() < 0.2:
            self.retry(grant, customer, request_id)


class SteadyUser(ChannelUser):
    """Everyday traffic: claims that succeed, a client retry now and then, claims that wait for
    the vendor, the reads a channel makes right after a grant, and customers using their
    vouchers at the vendor, which tells us through a signed callback."""

    weight = 2
    wait_time = between(0.1, 0.5)

    def on_start(self) -> None:
        super().on_start()
        self.campaign_id = env(sc.ENV_STEADY_CAMPAIGN, DEFAULTS.steady.id)
        self.reward_id = env(sc.ENV_STEADY_REWARD, DEFAULTS.steady.reward.id)
        self.customers = int(env(sc.ENV_STEADY_CUSTOMERS, str(DEFAULTS.steady.customers)))
        self.wait_ms = int(env(sc.ENV_WAIT_MS, str(sc.DEFAULT_WAIT_MS)))
        self.sim_url = env(sc.ENV_SIM_URL).rstrip("/")
        vendor_id = env(sc.ENV_VENDOR_ID, sc.VENDOR_ID)
        self.callback_url = f"{self.host}/v1/vendors/{vendor_id}/redemptions"
        # Grants this user was given lately, with the customer they went to.
        self.recent: deque[tuple[str, str]] = deque(maxlen=20)
        # Fulfilled grants not yet redeemed, and the latest state this user was told of each.
        self.redeemable: deque[str] = deque(maxlen=50)
        self.told: dict[str, str] = {}

    def _customer(self) -> str:
        return sc.customer_id(sc.STEADY_PREFIX, random.randrange(self.customers))

    @task(3)
    def claim_points(self) -> None:
        customer = self._customer()
        request_id = new_id()
        grant = self.claim("steady", self.campaign_id, customer, self.reward_id, request_id)
        if grant is None:
            return
        self.recent.append((grant["grant_id"], customer))
        if random.random() < 0.1:
            self.retry(grant, customer, request_id, self.reward_id)

    @task(3)
    def claim_and_wait(self) -> None:
        """A channel that shows the voucher code right away when the vendor is quick."""
        customer = self._customer()
        grant = self.claim(
            "steady, wait_ms", self.campaign_id, customer, self.reward_id, wait_ms=self.wait_ms
        )
        if grant is None:
            return
        self.recent.append((grant["grant_id"], customer))
        if grant.get("status") == "fulfilled":
            self.told[grant["grant_id"]] = "fulfilled"
            self.redeemable.append(grant["grant_id"])

    @task(1)
    def redeem(self) -> None:
        """The customer uses a voucher: the simulator sends its signed callback to the API and
        reports the API's answer. Now and then the vendor sends the same callback again, as
        vendors do when unsure it arrived: it must be answered as a replay."""
        if not self.redeemable:
            return
        grant_id = self.redeemable.popleft()
        redemption_id = new_id()
        if self.redemption(grant_id, redemption_id, replay=False):
            self.told[grant_id] = "redeemed"
            TALLY.redeemed.add(grant_id)
            if random.random() < 0.1 and self.redemption(grant_id, redemption_id, replay=True):
                TALLY.redemption_replays += 1

    def redemption(self, grant_id: str, redemption_id: str, replay: bool) -> bool:
        payload = {
            "callback_url": self.callback_url,
            "grant_id": grant_id,
            "redemption_id": redemption_id,
        }
        with self.client.request(
            "POST",
            f"{self.sim_url}{REDEEM}",
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
            name=f"{REDEEM} (signed callback)",
            catch_response=True,
        ) as resp:
            problem = _redemption_problem(resp, grant_id, replay)
            if problem:
                resp.failure(problem)
                return False
            resp.success()
            return True

    @task(3)
    def read_grant(self) -> None:
        if not self.recent:
            return
        grant_id, _customer = random.choice(self.recent)
        grant = self.get(f"/v1/grants/{grant_id}", "/v1/grants/[grant_id]")
        if grant is None:
            return
        if grant.get("grant_id") != grant_id:
            self.mismatch("read grant", f"asked {grant_id}, got {grant.get('grant_id')}")
            return
        # Read-your-writes along the lifecycle: once told fulfilled or redeemed, never less.
        told = self.told.get(grant_id)
        if told is not None and grant.get("status") not in LATER_STATUSES[told]:
            self.mismatch("read grant", f"{grant_id} was {told}, read {grant.get('status')}")

    @task(2)
    def read_customer(self) -> None:
        if not self.recent:
            customer, grant_id = self._customer(), None
        else:
            grant_id, customer = self.recent[-1]
        data = self.get(
            f"/v1/customers/{customer}/grants?limit=20", "/v1/customers/[customer_id]/grants"
        )
        # Read-your-writes: a grant just given is listed, whether or not the ledger has it yet.
        if data is not None and grant_id is not None:
            if grant_id not in {g.get("grant_id") for g in data.get("grants", [])}:
                self.mismatch("customer grants", f"grant {grant_id} of {customer} not listed")


class OffersUser(ChannelUser):
    """A channel's page of what a customer can have, and of their progress towards the goal:
    the goal campaign runs on this channel, so it is always among the offers."""

    fixed_count = 2
    wait_time = between(0.2, 0.5)

    def on_start(self) -> None:
        gevent.sleep(random.uniform(*STAGGER_S))
        super().on_start()
        self.campaign_id = env(sc.ENV_GOAL_CAMPAIGN, DEFAULTS.goal.id)
        self.customers = int(env(sc.ENV_GOAL_CUSTOMERS, str(DEFAULTS.goal.customers)))

    def _customer(self) -> str:
        return sc.customer_id(sc.GOAL_PREFIX, random.randrange(self.customers))

    @task(3)
    def offers(self) -> None:
        customer = self._customer()
        data = self.get(f"/v1/customers/{customer}/offers", "/v1/customers/[customer_id]/offers")
        if data is None:
            return
        mine = [o for o in data.get("offers", []) if o.get("campaign_id") == self.campaign_id]
        if not mine or not all(isinstance(o.get("progress"), dict) for o in mine):
            self.mismatch("offers", f"goal campaign missing or without progress for {customer}")

    @task(1)
    def progress(self) -> None:
        customer = self._customer()
        data = self.get(
            f"/v1/customers/{customer}/progress?campaign_id={self.campaign_id}",
            "/v1/customers/[customer_id]/progress",
        )
        if data is None:
            return
        rewards = data.get("rewards")
        if data.get("campaign_id") != self.campaign_id or not rewards:
            self.mismatch("progress", f"no goal progress for {customer}: {str(data)[:200]}")
        elif any(r.get("count", -1) < 0 or r.get("amount", -1) < 0 for r in rewards):
            self.mismatch("progress", f"negative progress for {customer}: {rewards}")


@events.quitting.add_listener
def _verdict(environment: Environment, **_kwargs: Any) -> None:
    """Locust's own exit code knows nothing of the SLA, and has exited 0 with failing tasks
    (locustio/locust#1172): decide it here, from the failures and the p99 of every channel
    endpoint, and leave a summary for the audit."""
    sla_ms = float(os.environ.get(sc.ENV_P99_MS, sc.DEFAULT_P99_MS))
    stats = environment.stats
    problems = []
    endpoints = {}
    for entry in stats.entries.values():
        if entry.method == "CHECK":
            continue
        p99 = entry.get_response_time_percentile(0.99) if entry.num_requests else 0
        endpoints[f"{entry.method} {entry.name}"] = {
            "requests": entry.num_requests,
            "failures": entry.num_failures,
            "rps": round(entry.total_rps, 1),
            "p50_ms": entry.get_response_time_percentile(0.5) if entry.num_requests else 0,
            "p99_ms": p99,
            "max_ms": round(entry.max_response_time or 0),
        }
        if p99 > sla_ms and not f"{entry.method} {entry.name}".startswith(SLA_EXEMPT):
            problems.append(f"{entry.method} {entry.name}: p99 {p99} ms over the {sla_ms:g} ms SLA")
    if stats.total.num_failures:
        problems.append(f"{stats.total.num_failures} failed requests or checks")
    if environment.runner is not None and environment.runner.exceptions:
        problems.append(f"{len(environment.runner.exceptions)} distinct task exceptions")
    if not any(name.startswith(f"POST {CLAIMS}") for name in endpoints):
        problems.append("no claim was made")
    if not any(name.startswith(f"POST {EVENTS}") for name in endpoints):
        problems.append("no card event was sent")
    if problems:
        environment.process_exit_code = 1
    for problem in problems:
        log.error("load test: %s", problem)

    path = os.environ.get(sc.ENV_SUMMARY)
    if path:
        summary = {
            "sla_p99_ms": sla_ms,
            "endpoints": endpoints,
            "failures": stats.total.num_failures,
            "problems": problems,
            "outcomes": {c: dict(o) for c, o in TALLY.outcomes.items()},
            "grant_ids": {c: sorted(g) for c, g in TALLY.grants.items()},
            "waited": dict(TALLY.waited),
            "fulfilled_codes": TALLY.codes,
            "redeemed": sorted(TALLY.redeemed),
            "redemption_replays": TALLY.redemption_replays,
            "sla_exempt": list(SLA_EXEMPT),
            "logins": dict(TALLY.logins),
            "statements": TALLY.statements,
            "statement_bytes": TALLY.statement_bytes,
            "statements_refused": TALLY.statements_refused,
        }
        with open(path, "w") as f:
            json.dump(summary, f)
