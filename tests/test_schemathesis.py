"""schemathesis against the served API, from its own /openapi.json: for every operation, cases
made from the document (valid ones, and invalid ones where there is something to get wrong)
are sent signed as the operation's security says (channel HMAC, staff bearer token, vendor
RSA), and each answer must be no 5xx, of a declared status, of the declared media type and
match the declared schema.

Bounded and repeatable: a few cases per operation, derandomized (the same cases every run), no
example database. Each operation runs on a world of its own: an approved campaign c1 with a
grant, vendor `sim` with the test vendor key, the test channel and signed-in staff."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

import aiohttp
import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from quanyi.access.channels import create_channel
from quanyi.access.secret_box import secret_box
from quanyi.access.signing import signed_headers
from quanyi.vendors import rsa
from quanyi.web.app import create_app
from quanyi.web.openapi import build_document
from tests.support import factories
from tests.support.clients import Api, new_sessions
from tests.support.settings import CHANNEL, CHANNEL_SECRET, settings_for_tests

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Cases per operation (valid, invalid): the module stays under a minute on two cores.
EXAMPLES = (7, 4)
# Each login hashes its password (scrypt): fewer of them.
FEWER = {"/admin/v1/login": (4, 3)}
VENDOR = "sim"
STAFF = "admin"  # head office, every role: staff cases reach every admin handler

OPERATIONS = [
    (method.upper(), path)
    for path, item in build_document(create_app(settings_for_tests()))["paths"].items()
    for method in item
]

_loaded: dict[bytes, Any] = {}


def served_schema(base_url: str) -> Any:
    """The schema as the app serves it at /openapi.json; loaded once (loading takes seconds):
    every app of this module serves the same document."""
    served = requests.get(f"{base_url}/openapi.json", timeout=10)
    assert served.status_code == 200, served.text
    if served.content not in _loaded:
        _loaded[served.content] = schemathesis.openapi.from_dict(served.json())
    return _loaded[served.content]


class Signer(requests.auth.AuthBase):
    """Signs each request as it goes out (its final method, path, query and body bytes) the way
    the operation's security says."""

    def __init__(
        self,
        security: list[dict[str, Any]],
        clock: Callable[[], float],
        vendor_key: Any,
        token: Callable[[], str],
        customer_token: str = "",
    ) -> None:
        self._schemes = {name for requirement in security for name in requirement}
        self._customer_token = customer_token
        self._clock = clock
        self._vendor_key = vendor_key
        self._token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        timestamp = int(self._clock())
        if "channelSignature" in self._schemes:
            method, path = request.method or "", request.path_url
            request.headers.update(
                signed_headers(CHANNEL, CHANNEL_SECRET, method, path, timestamp, body)
            )
        if "staffToken" in self._schemes:
            request.headers["Authorization"] = f"Bearer {self._token()}"
        if "customerSession" in self._schemes:  # the customer H5 page's session
            request.headers["Authorization"] = f"Bearer {self._customer_token}"
        if "vendorSignature" in self._schemes:
            request.headers["X-Vendor-Timestamp"] = str(timestamp)
            request.headers["X-Vendor-Signature"] = rsa.sign(self._vendor_key, str(timestamp), body)
        return request


@pytest.fixture
async def test_channel(pool, settings) -> None:
    # Before the app starts, so its first load of the channel directory has it.
    await create_channel(pool, CHANNEL, CHANNEL_SECRET, box=secret_box(settings))


@pytest.fixture
async def world(test_channel, served, pool, staff, clock, key_pairs, our_key_file) -> dict:
    """The served API with c1, a grant of it, vendor `sim` and a session per staff member."""
    host, port = served
    base_url = f"http://{host}:{port}"
    async with aiohttp.ClientSession(base_url) as session:
        api = Api(session, clock)
        for username, token in (await new_sessions(pool)).items():
            api.use_session(username, token)
        # No worker runs here: the vendor is registered, never called.
        await factories.register_vendor(api, VENDOR, "http://127.0.0.1:9", key_pairs, our_key_file)
        await api.create_right()
        await api.create_campaign()
        status, grant = await api.claim(request_id="q0", campaign_id="c1", customer_id="cust-0")
        assert status == 201, grant
        status, h5 = await api.channel("POST", "/v1/h5/sessions", {"customer_id": "cust-0"})
        assert status == 201, h5
    return {"base_url": base_url, "token": api.tokens()[STAFF], "customer_token": h5["token"]}


def _negatable(definition: dict[str, Any]) -> bool:
    """Whether an invalid case can be made: something is sent besides the path."""
    return bool(definition.get("parameters") or definition.get("requestBody"))


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
async def test_operation_answers_as_documented(world, pool, clock, key_pairs, method, path):
    loop = asyncio.get_running_loop()

    def token() -> str:
        if path != "/admin/v1/logout":
            return world["token"]
        # Each logout ends the session it names: each case has one of its own.
        made = asyncio.run_coroutine_threadsafe(new_sessions(pool, STAFF), loop).result(10)
        return made[STAFF]

    def fuzz() -> tuple[list[str], Counter[int]]:
        operation = served_schema(world["base_url"])[path][method]
        definition = operation.definition.raw
        signer = Signer(
            definition.get("security", []),
            clock,
            rsa.load_key(key_pairs.vendor_private),
            token,
            world["customer_token"],
        )
        # A vendor signs as itself: its cases name it, or none would pass the signature.
        fixed = {"vendor_id": VENDOR} if "{vendor_id}" in path else None
        valid, invalid = FEWER.get(path, EXAMPLES)
        modes = {GenerationMode.POSITIVE: valid}
        if _negatable(definition):
            modes[GenerationMode.NEGATIVE] = invalid
        failures: list[str] = []
        statuses: Counter[int] = Counter()
        with requests.Session() as session:
            for mode, examples in modes.items():

                @hypothesis.given(
                    case=operation.as_strategy(generation_mode=mode, path_parameters=fixed)
                )
                @hypothesis.settings(
                    max_examples=examples,
                    derandomize=True,
                    database=None,
                    deadline=None,
                    phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=list(HealthCheck),
                )
                def run(case: schemathesis.Case) -> None:
                    response = case.call(
                        base_url=world["base_url"], session=session, auth=signer, timeout=10
                    )
                    statuses[response.status_code] += 1
                    case.validate_response(response, checks=CHECKS)

                try:
                    run()
                except (Exception, BaseExceptionGroup) as exc:  # each mode's, not the first
                    failures.append(f"{mode.value} cases: {exc}")
        return failures, statuses

    failures, statuses = await asyncio.to_thread(fuzz)
    assert not failures, "\n\n".join(failures)
    # Every signature and token was accepted: the cases reached the handler, not its guard
    # (a login's 401 is the handler's: a wrong password).
    assert 401 not in statuses or path == "/admin/v1/login", statuses
