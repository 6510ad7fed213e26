"""`quanyi claim` and `quanyi grant`: one signed request to a running API, as a channel sends it."""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid

import aiohttp
import orjson

from quanyi.access.signing import signed_headers
from quanyi.cli.command import Commands, add_command
from quanyi.core.settings import Settings

SECRET_ENV = "QUANYI_CHANNEL_SECRET"


def register(commands: Commands) -> None:
    claim = add_command(commands, "claim", send_claim)
    claim.add_argument("--campaign", required=True, help="the campaign id")
    claim.add_argument("--customer", required=True, help="the customer id")
    claim.add_argument("--reward", help="the reward id (default: the campaign's only reward)")
    claim.add_argument("--request-id", help="the idempotency key (default: a fresh random id)")
    claim.add_argument(
        "--wait-ms",
        type=int,
        help="wait up to this long for the vendor, <= 800 (default: no wait)",
    )
    _channel_options(claim)
    grant = add_command(commands, "grant", read_grant)
    grant.add_argument("grant_id", help="the grant id a claim returned")
    _channel_options(grant)


def _channel_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--channel", required=True, help="the channel id to sign as")
    parser.add_argument("--secret", help=f"the channel secret (default: ${SECRET_ENV})")
    parser.add_argument(
        "--url",
        help="API base URL (default: http://QUANYI_HTTP_HOST:QUANYI_HTTP_PORT,"
        f" else http://{Settings.http_host}:{Settings.http_port})",
    )


async def send_claim(settings: Settings, args: argparse.Namespace) -> int:
    body: dict[str, str | int] = {
        "request_id": args.request_id or uuid.uuid4().hex,
        "campaign_id": args.campaign,
        "customer_id": args.customer,
    }
    if args.reward:
        body["reward_id"] = args.reward
    if args.wait_ms:
        body["wait_ms"] = args.wait_ms
    return await _channel_call(settings, args, "POST", "/v1/claims", orjson.dumps(body))


async def read_grant(settings: Settings, args: argparse.Namespace) -> int:
    return await _channel_call(settings, args, "GET", f"/v1/grants/{args.grant_id}", b"")


async def _channel_call(
    settings: Settings, args: argparse.Namespace, method: str, path: str, data: bytes
) -> int:
    """One signed request; prints the status and the reply."""
    secret = args.secret or os.environ.get(SECRET_ENV)
    if not secret:
        print(f"quanyi: give --secret or set {SECRET_ENV}", file=sys.stderr)
        return 2
    base = args.url or f"http://{settings.http_host}:{settings.http_port}"
    headers = signed_headers(args.channel, secret, method, path, int(time.time()), data)
    headers["Content-Type"] = "application/json"
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, base + path, data=data, headers=headers) as resp,
        ):
            status, reply = resp.status, await resp.read()
    except (aiohttp.ClientError, OSError) as exc:
        print(f"quanyi: cannot reach {base}: {exc}", file=sys.stderr)
        return 1
    print(status, reply.decode())
    return 0 if status < 400 else 1
