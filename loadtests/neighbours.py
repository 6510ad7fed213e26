"""The two neighbours of the channel users that the claims must not feel: a login flood with
wrong passwords, and a vendor uploading multi-megabyte signed statements. Their figures are
reported but not held to the channel SLA."""

from __future__ import annotations

import json
import random
import time
import uuid
from typing import Any

from locust import FastHttpUser, between, task

from loadtests import scenario as sc
from loadtests.clients import TALLY, describe, env, error_code
from quanyi.core.ids import new_grant_id
from quanyi.vendors import rsa

LOGIN = "/admin/v1/login"
LOGIN_FLOOD = f"{LOGIN} (flood)"
STATEMENT_UPLOAD = "/v1/vendors/[vendor_id]/statements (signed upload)"
# Not channel endpoints, so not held to the channel SLA (their figures are still reported):
# the point of running them is that the claims beside them still are.
SLA_EXEMPT = (f"POST {LOGIN_FLOOD}", f"POST {STATEMENT_UPLOAD}")
# The flood's targets: a real admin of the run and names no one has.
FLOOD_USERNAMES = ("lt-admin", "lt-nobody", "root")


class LoginFloodUser(FastHttpUser):
    """A password-guessing script: wrong passwords against a few usernames, and now and then a
    fresh name. Known or not, each name is locked after 5 failures (429, no hashing); the fresh
    names keep scrypt busy. Every answer must be 401 or 429 with Retry-After."""

    fixed_count = 4
    wait_time = between(0.01, 0.05)
    network_timeout = 10.0
    connection_timeout = 5.0

    @task
    def guess(self) -> None:
        if random.random() < 0.5:
            username = random.choice(FLOOD_USERNAMES)
        else:
            username = f"lt-guess-{uuid.uuid4().hex[:12]}"
        body = json.dumps({"username": username, "password": uuid.uuid4().hex}).encode()
        with self.client.request(
            "POST",
            LOGIN,
            data=body,
            headers={"Content-Type": "application/json"},
            name=LOGIN_FLOOD,
            catch_response=True,
        ) as resp:
            code = error_code(resp)
            if (resp.status_code, code) == (401, "unauthorized") or (
                (resp.status_code, code) == (429, "too_many_attempts")
                and (resp.headers.get("Retry-After") or "").isdigit()
            ):
                TALLY.logins[str(resp.status_code)] += 1
                resp.success()
            else:
                TALLY.logins[f"failed:{resp.status_code}:{code}"] += 1
                resp.failure(describe(resp, code))


class StatementUploadUser(FastHttpUser):
    """The vendor sends its daily statement, signed, a few MiB of rows (none of them ours, so
    every row lands in missing_ours and the report is as large as it gets)."""

    fixed_count = 2
    wait_time = between(1.0, 2.0)
    network_timeout = 30.0
    connection_timeout = 5.0

    def on_start(self) -> None:
        with open(env(sc.ENV_VENDOR_KEY_FILE)) as f:
            self.key = rsa.load_key(f.read())
        vendor_id = env(sc.ENV_VENDOR_ID, sc.VENDOR_ID)
        self.path = f"/v1/vendors/{vendor_id}/statements?day={time.strftime('%Y-%m-%d')}"
        mib = float(env(sc.ENV_STATEMENT_MIB, str(sc.DEFAULT_STATEMENT_MIB)))
        now_ms = int(time.time() * 1000)
        lines, size = ["grant_id,code,status,redeemed_at"], 0
        while size < mib * 1024 * 1024:
            lines.append(f"{new_grant_id(now_ms)},LT-{len(lines):012d},issued,")
            size += len(lines[-1]) + 1
        self.rows = len(lines) - 1
        self.body = ("\n".join(lines) + "\n").encode()

    @task
    def upload(self) -> None:
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "text/csv",
            "X-Vendor-Timestamp": timestamp,
            "X-Vendor-Signature": rsa.sign(self.key, timestamp, self.body),
        }
        with self.client.request(
            "POST",
            self.path,
            data=self.body,
            headers=headers,
            name=STATEMENT_UPLOAD,
            catch_response=True,
        ) as resp:
            # The report starts with its counts; the rest is megabytes not worth parsing here.
            if resp.status_code == 201 and f'"rows":{self.rows},' in (resp.text or "")[:300]:
                TALLY.statements += 1
                TALLY.statement_bytes += len(self.body)
                resp.success()
            elif _busy_vendor(resp):
                # One upload per vendor at a time: the other uploader's is in flight.
                TALLY.statements_refused += 1
                resp.success()
            else:
                resp.failure(describe(resp, error_code(resp)))


def _busy_vendor(resp: Any) -> bool:
    """429 too_many_requests with a Retry-After: the answer to an upload while another is in
    flight for the same vendor."""
    return (
        resp.status_code == 429
        and error_code(resp) == "too_many_requests"
        and (resp.headers.get("Retry-After") or "").isdigit()
    )
