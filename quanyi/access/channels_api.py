"""The staff routes of channels: the list (never a secret), a credential rotation and a
channel's rate limit. Changing either is for head-office admins, and audited.

A change is loaded at once by the process that made it, and by every other API process on its
next channel refresh (settings.channel_refresh_s): `active_within_s` in the answer says how
long that may take."""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from quanyi.access.api import CHANNELS, request_staff
from quanyi.access.channel_model import (
    ChannelsReply,
    RateLimitBody,
    RateLimitReply,
    RotateBody,
    RotateReply,
)
from quanyi.access.channels import list_channels, rotate_secret
from quanyi.access.rate_limits import RateLimit, default_limit, set_rate_limit
from quanyi.access.staff import Staff
from quanyi.core.errors import Forbidden, InvalidRequest, NotFound, Unauthorized
from quanyi.core.http import CLOCK, SETTINGS, json_response, path_id
from quanyi.core.schemas import decode, endpoint
from quanyi.stores.appkeys import POOL

routes = web.RouteTableDef()

# The new secret is in the answer: no cache along the way may keep it.
NO_STORE = {"Cache-Control": "no-store"}


def _require_admin(staff: Staff) -> None:
    staff.require_role("admin")
    staff.require_head_office()


@routes.get("/admin/v1/channels")
@endpoint(
    "The channels (head office): scopes, rate limits, rotations; never a secret",
    auth="staff",
    responses={200: ChannelsReply},
    errors=(Unauthorized, Forbidden),
    tags=("channels",),
)
async def get_channels(request: web.Request) -> web.Response:
    staff = await request_staff(request)
    staff.require_head_office()
    default = default_limit(request.app[SETTINGS])
    channels = await list_channels(request.app[POOL], request.app[CLOCK]())
    return json_response(
        {
            "channels": channels,
            "default_rate_limit": None if default is None else default.to_json(),
        }
    )


@routes.post("/admin/v1/channels/{channel_id}/rotate")
@endpoint(
    "Rotate a channel's secret: the new one is shown once, the old one signs for a grace period",
    auth="staff",
    body=RotateBody,
    responses={200: RotateReply},
    errors=(InvalidRequest, Unauthorized, Forbidden, NotFound),
    tags=("channels",),
)
async def post_rotate(request: web.Request) -> web.Response:
    staff = await request_staff(request)
    _require_admin(staff)
    channel_id = path_id(request, "channel_id")
    raw = await request.read()
    body = decode(RotateBody, raw) if raw.strip() else RotateBody()
    settings = request.app[SETTINGS]
    grace_s = settings.channel_rotation_grace_s if body.grace_s is None else body.grace_s
    secret, until = await rotate_secret(
        request.app[POOL],
        channel_id,
        request.app[CHANNELS].box,
        grace_s=grace_s,
        now=request.app[CLOCK](),
        actor=staff,
    )
    await request.app[CHANNELS].refresh()
    reply = {
        "channel_id": channel_id,
        "secret": secret,
        "previous_secret_until": datetime.fromtimestamp(until, UTC).isoformat(),
        "active_within_s": settings.channel_refresh_s,
    }
    return json_response(reply, headers=NO_STORE)


@routes.put("/admin/v1/channels/{channel_id}/rate-limit")
@endpoint(
    "Set a channel's rate limit (requests per second and burst; both null: the default)",
    auth="staff",
    body=RateLimitBody,
    responses={200: RateLimitReply},
    errors=(InvalidRequest, Unauthorized, Forbidden, NotFound),
    tags=("channels",),
)
async def put_rate_limit(request: web.Request) -> web.Response:
    staff = await request_staff(request)
    _require_admin(staff)
    channel_id = path_id(request, "channel_id")
    body = decode(RateLimitBody, await request.read())
    limit = (
        None
        if body.per_second is None or body.burst is None
        else RateLimit(body.per_second, body.burst)
    )
    await set_rate_limit(request.app[POOL], channel_id, limit, staff)
    await request.app[CHANNELS].refresh()
    return json_response(
        {
            "channel_id": channel_id,
            "rate_limit": None if limit is None else limit.to_json(),
            "active_within_s": request.app[SETTINGS].channel_refresh_s,
        }
    )
