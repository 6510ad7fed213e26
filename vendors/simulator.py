"""A simulated third-party vendor: a real HTTP server standing in for voucher issuers, lounge
providers and a points system in tests, demos and load tests.

It speaks the generic `http` vendor protocol (POST /grants with an Idempotency-Key), a points
system shape (POST /points/credits), signs its responses and redemption callbacks with
SHA256withRSA, and can be told to be slow, flaky, hanging or down. Control endpoints under
/_sim report per-key call and effect counts so a test can prove a caller retried without
issuing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import random
import secrets
import signal
import string
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from quanyi.vendors import rsa

log = logging.getLogger(__name__)

CONTROL_PREFIX = "/_sim/"
CODE_ALPHABET = string.ascii_uppercase + string.digits
CODE_LENGTH = 12
CALLBACK_TIMEOUT_S = 10.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class SimulatorConfig:
    latency_ms: float = 20.0  # added to every issue/revoke/lookup/points call
    jitter_ms: float = 0.0  # uniform extra latency 0..jitter
    error_rate: float = 0.0  # probability of answering 500 (before any effect)
    timeout_rate: float = 0.0  # probability of hanging `hang_s` seconds, then answering 504
    hang_s: float = 30.0
    outage: bool = False  # answer 503 to everything except the /_sim control endpoints
    code_prefix: str = "SIM"
    validity_days: int = 30
    private_key_pem: str | None = None  # the vendor's key: signs responses and callbacks
    client_public_key_pem: str | None = None  # our key: when set, requests must be signed


# What POST /_sim/config may change while the simulator runs, with each value's check.
def _non_negative(value: Any) -> bool:
    return _is_number(value) and value >= 0


def _probability(value: Any) -> bool:
    return _is_number(value) and 0 <= value <= 1


def _is_number(value: Any) -> bool:
    # bool is an int subclass; `"outage": true` must not pass as a latency of 1 ms.
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


_TUNABLE: dict[str, tuple[Callable[[Any], bool], str]] = {
    "latency_ms": (_non_negative, "a number >= 0"),
    "jitter_ms": (_non_negative, "a number >= 0"),
    "hang_s": (_non_negative, "a number >= 0"),
    "error_rate": (_probability, "a number in [0, 1]"),
    "timeout_rate": (_probability, "a number in [0, 1]"),
    "outage": (lambda v: isinstance(v, bool), "true or false"),
}


def _config_problem(changes: dict[str, Any]) -> str | None:
    for name, value in changes.items():
        if name not in _TUNABLE:
            return f"unknown setting {name!r}; settable: {', '.join(_TUNABLE)}"
        check, expected = _TUNABLE[name]
        if not check(value):
            return f"{name} must be {expected}"
    return None


def _public_config(config: SimulatorConfig) -> dict[str, Any]:
    # The private key never leaves the process; say only whether signing is on.
    shown = {name: getattr(config, name) for name in _TUNABLE}
    shown.update(
        code_prefix=config.code_prefix,
        validity_days=config.validity_days,
        signs_responses=config.private_key_pem is not None,
        verifies_requests=config.client_public_key_pem is not None,
    )
    return shown


@dataclass
class SimulatorState:
    """Everything the simulator remembers; one per app, so simulators side by side never meet."""

    config: SimulatorConfig
    private_key: rsa.RsaKey | None
    client_keys: list[rsa.RsaKey]
    rng: random.Random = field(default_factory=random.Random)
    grants: dict[str, dict[str, Any]] = field(default_factory=dict)
    credits: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: Counter[str] = field(default_factory=Counter)
    effects: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0
    max_in_flight: int = 0
    session: aiohttp.ClientSession | None = None

    def enter(self) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def leave(self) -> None:
        self.in_flight -= 1

    def reset(self) -> None:
        self.grants.clear()
        self.credits.clear()
        self.calls.clear()
        self.effects.clear()
        # Calls still in flight are real; the peak restarts from them.
        self.max_in_flight = self.in_flight

    def stats(self) -> dict[str, Any]:
        return {
            "calls": dict(self.calls),
            "effects": dict(self.effects),
            "issued": sum(self.effects.values()),
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
        }


STATE = web.AppKey("simulator_state", SimulatorState)


# --- helpers ------------------------------------------------------------------------------


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


class BadRequest(Exception):
    """A request the simulator refuses with 400; the message goes back to the caller."""


def _parse_object(body: bytes) -> dict[str, Any]:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise BadRequest("body must be a JSON object")
    return payload


async def _read_object(request: web.Request) -> dict[str, Any]:
    return _parse_object(await request.read())


def _required_str(payload: dict[str, Any], name: str) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{name} is required (a non-empty string)")
    return value


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _now() -> datetime:
    return datetime.now(UTC)


def _signature_headers(key: rsa.RsaKey, body: bytes) -> dict[str, str]:
    timestamp = str(int(time.time()))
    return {"X-Vendor-Timestamp": timestamp, "X-Vendor-Signature": rsa.sign(key, timestamp, body)}


def _request_signed(state: SimulatorState, request: web.Request, body: bytes) -> bool:
    timestamp = request.headers.get("X-Quanyi-Timestamp", "")
    signature = request.headers.get("X-Quanyi-Signature", "")
    if not timestamp or not signature:
        return False
    return rsa.verify(state.client_keys, timestamp, body, signature)


def _idempotency_key(request: web.Request, body: bytes) -> str | None:
    """The key a keyed call is counted under, when it names one (even if invalid otherwise)."""
    route = request.match_info.route.name
    if route == "issue":
        return request.headers.get("Idempotency-Key") or None
    if route == "credit":
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        key = payload.get("idempotency_key") if isinstance(payload, dict) else None
        return key if isinstance(key, str) and key else None
    return None


# --- the vendor's behaviour ---------------------------------------------------------------


async def _misbehave(
    state: SimulatorState, request: web.Request, body: bytes
) -> web.Response | None:
    """The configured failure to answer with, if any; always before the call has any effect.
    The config is read per call so POST /_sim/config changes behaviour mid-test."""
    config = state.config
    if config.outage:
        return _error(503, "vendor unavailable")
    if state.client_keys and not _request_signed(state, request, body):
        return _error(401, "bad signature")
    await asyncio.sleep((config.latency_ms + state.rng.uniform(0, config.jitter_ms)) / 1000)
    if state.rng.random() < config.timeout_rate:
        await asyncio.sleep(config.hang_s)
        return _error(504, "vendor timed out")
    if state.rng.random() < config.error_rate:
        return _error(500, "simulated vendor error")
    return None


async def _vendor_call(request: web.Request, handler: Handler) -> web.StreamResponse:
    state = request.app[STATE]
    matched = request.match_info.http_exception
    if matched is not None:
        # A vendor that is down does not get as far as routing.
        return (
            _error(503, "vendor unavailable")
            if state.config.outage
            else _error(matched.status, matched.reason)
        )
    body = await request.read()
    # Every call is counted, whatever it is answered, so tests can see a caller's retries.
    key = _idempotency_key(request, body)
    if key is not None:
        state.calls[key] += 1
    failure = await _misbehave(state, request, body)
    if failure is not None:
        return failure
    response = await handler(request)
    if state.private_key is not None and isinstance(response, web.Response):
        _sign_response(state.private_key, response)
    return response


def _sign_response(key: rsa.RsaKey, response: web.Response) -> None:
    if 200 <= response.status < 300 and isinstance(response.body, bytes):
        response.headers.update(_signature_headers(key, response.body))


@web.middleware
async def _middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Vendor calls get latency, failures and signatures; every route gets JSON errors."""
    state = request.app[STATE]
    control = request.path.startswith(CONTROL_PREFIX)
    if not control:
        state.enter()
    try:
        if control:
            return await handler(request)
        return await _vendor_call(request, handler)
    except BadRequest as exc:
        return _error(400, str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, exc.reason)
    except asyncio.CancelledError:
        raise
    except Exception:
        # A bug here must still answer JSON, and loudly, so it is not mistaken for a
        # simulated failure.
        log.exception("simulator failed on %s %s", request.method, request.path)
        return _error(500, "simulator internal error (not a simulated failure)")
    finally:
        if not control:
            state.leave()


# --- voucher / lounge issuing -------------------------------------------------------------


def _new_code(state: SimulatorState) -> str:
    suffix = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
    return f"{state.config.code_prefix}-{suffix}"


def _new_voucher(state: SimulatorState, grant_id: str) -> dict[str, Any]:
    return {
        "grant_id": grant_id,
        "code": _new_code(state),
        "reference": uuid.uuid4().hex,
        "expires_at": _rfc3339(_now() + timedelta(days=state.config.validity_days)),
        "state": "issued",
    }


async def issue_grant(request: web.Request) -> web.Response:
    state = request.app[STATE]
    payload = await _read_object(request)
    key = request.headers.get("Idempotency-Key")
    if not key:
        raise BadRequest("the Idempotency-Key header is required")
    grant_id = _required_str(payload, "grant_id")
    if key != grant_id:
        raise BadRequest("Idempotency-Key must equal grant_id")
    voucher = state.grants.get(grant_id)
    if voucher is None:
        voucher = state.grants[grant_id] = _new_voucher(state, grant_id)
        state.effects[key] += 1
    return _json(voucher)


def _known_grant(request: web.Request) -> dict[str, Any]:
    voucher = request.app[STATE].grants.get(request.match_info["grant_id"])
    if voucher is None:
        raise web.HTTPNotFound(reason="unknown grant")
    return voucher


async def revoke_grant(request: web.Request) -> web.Response:
    voucher = _known_grant(request)
    voucher["state"] = "revoked"
    return _json({"grant_id": voucher["grant_id"], "state": "revoked"})


async def get_grant(request: web.Request) -> web.Response:
    return _json(_known_grant(request))


# --- points system ------------------------------------------------------------------------


def _points(payload: dict[str, Any]) -> int:
    value = payload.get("points")
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise BadRequest("points is required (a positive integer)")
    return value


async def credit_points(request: web.Request) -> web.Response:
    state = request.app[STATE]
    payload = await _read_object(request)
    key = _required_str(payload, "idempotency_key")
    account = _required_str(payload, "account")
    points = _points(payload)
    credit = state.credits.get(key)
    if credit is None:
        credit = state.credits[key] = {
            "credit_id": uuid.uuid4().hex,
            "account": account,
            "points": points,
            "state": "credited",
        }
        state.effects[key] += 1
    return _json(credit)


async def reverse_credit(request: web.Request) -> web.Response:
    credit = request.app[STATE].credits.get(request.match_info["idempotency_key"])
    if credit is None:
        raise web.HTTPNotFound(reason="unknown credit")
    credit["state"] = "reversed"
    return _json(credit)


# --- control endpoints --------------------------------------------------------------------


async def sim_stats(request: web.Request) -> web.Response:
    return _json(request.app[STATE].stats())


async def sim_config(request: web.Request) -> web.Response:
    state = request.app[STATE]
    changes = await _read_object(request)
    problem = _config_problem(changes)
    if problem:
        raise BadRequest(problem)
    state.config = dataclasses.replace(state.config, **changes)
    return _json(_public_config(state.config))


async def sim_reset(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.reset()
    return _json(state.stats())


def _redemption_body(payload: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {}
    redemption_id = payload.get("redemption_id")
    if redemption_id is not None and (not isinstance(redemption_id, str) or not redemption_id):
        raise BadRequest("redemption_id must be a non-empty string")
    body["redemption_id"] = redemption_id or uuid.uuid4().hex
    for name in ("grant_id", "code"):
        if payload.get(name) is not None:
            body[name] = _required_str(payload, name)
    if "grant_id" not in body and "code" not in body:
        raise BadRequest("grant_id or code is required")
    body["redeemed_at"] = _rfc3339(_now())
    return body


def _decode_reply(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode(errors="replace")


async def sim_redeem(request: web.Request) -> web.Response:
    """Plays the customer using a voucher: the vendor tells us through a signed callback.
    Without a private key the callback goes unsigned, which tests callers' rejection of it."""
    state = request.app[STATE]
    payload = await _read_object(request)
    callback_url = _required_str(payload, "callback_url")
    sent = _redemption_body(payload)
    raw = orjson.dumps(sent)
    headers = {"Content-Type": "application/json"}
    if state.private_key is not None:
        headers.update(_signature_headers(state.private_key, raw))
    if state.session is None:
        return _error(503, "the simulator is not running (no client session)")
    try:
        async with state.session.post(callback_url, data=raw, headers=headers) as reply:
            reply_body = _decode_reply(await reply.read())
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return _json({"error": f"callback failed: {exc!r}", "sent": sent}, 502)
    return _json({"status": reply.status, "body": reply_body, "sent": sent})


# --- app ----------------------------------------------------------------------------------


async def _client_session(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    state.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CALLBACK_TIMEOUT_S))
    try:
        yield
    finally:
        await state.session.close()
        state.session = None


def _check_config(config: SimulatorConfig) -> None:
    problem = _config_problem({name: getattr(config, name) for name in _TUNABLE})
    if problem:
        raise ValueError(problem)
    if config.validity_days < 0:
        raise ValueError("validity_days must be >= 0")


def create_simulator(config: SimulatorConfig | None = None) -> web.Application:
    """A fresh simulator; its config is copied, so later changes go through /_sim/config."""
    config = dataclasses.replace(config or SimulatorConfig())
    _check_config(config)
    state = SimulatorState(
        config=config,
        private_key=rsa.load_key(config.private_key_pem) if config.private_key_pem else None,
        client_keys=(
            [rsa.load_key(config.client_public_key_pem)] if config.client_public_key_pem else []
        ),
    )
    app = web.Application(middlewares=[_middleware])
    app[STATE] = state
    app.cleanup_ctx.append(_client_session)
    add = app.router
    add.add_post("/grants", issue_grant, name="issue")
    add.add_post("/grants/{grant_id}/revoke", revoke_grant, name="revoke")
    add.add_get("/grants/{grant_id}", get_grant, name="lookup")
    add.add_post("/points/credits", credit_points, name="credit")
    add.add_post("/points/credits/{idempotency_key}/reverse", reverse_credit, name="reverse")
    add.add_get("/_sim/stats", sim_stats)
    add.add_post("/_sim/config", sim_config)
    add.add_post("/_sim/reset", sim_reset)
    add.add_post("/_sim/redeem", sim_redeem)
    return app


async def run_simulator(host: str, port: int, config: SimulatorConfig) -> None:
    """Serves until cancelled or sent SIGINT/SIGTERM."""
    runner = web.AppRunner(create_simulator(config), access_log=None, handle_signals=False)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    watched: list[signal.Signals] = []
    try:
        await web.TCPSite(runner, host, port).start()
        log.info("vendor simulator listening on http://%s:%d", host, port)
        for sig in (signal.SIGINT, signal.SIGTERM):
            # Only the main thread may own signals; elsewhere cancellation is the way out.
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, stop.set)
                watched.append(sig)
        await stop.wait()
        log.info("vendor simulator shutting down")
    finally:
        for sig in watched:
            loop.remove_signal_handler(sig)
        await runner.cleanup()
