"""What the admin APIs share of access (the staff member behind a request), and staff login
and logout."""

from __future__ import annotations

from aiohttp import web

from quanyi.access.channels import ChannelDirectory
from quanyi.access.model import LoginBody, LoginReply, LogoutReply
from quanyi.access.staff import PasswordChangeRequired, Staff, authenticate, login, logout
from quanyi.core.errors import InvalidRequest, TooManyAttempts, Unauthorized, Unavailable
from quanyi.core.http import SETTINGS, STAFF_USERNAME, json_response
from quanyi.core.schemas import decode, endpoint
from quanyi.stores.appkeys import POOL

routes = web.RouteTableDef()
CHANNELS = web.AppKey("channels", ChannelDirectory)


async def request_staff(request: web.Request, *, pending_password: bool = False) -> Staff:
    """The staff member whose bearer token signs this admin request. An account whose password
    was reset may only set a new one first: every route but those that pass
    `pending_password` (setting the password, reading who one is) answers 403."""
    staff = await authenticate(request.app[POOL], request.headers.get("Authorization", ""))
    request[STAFF_USERNAME] = staff.username  # for the access log line
    if staff.must_change_password and not pending_password:
        raise PasswordChangeRequired(
            "your password was reset: set a new one with POST /admin/v1/password first"
        )
    return staff


@routes.post("/admin/v1/login")
@endpoint(
    "Staff log in: a bearer token for the admin API",
    auth="none",
    body=LoginBody,
    responses={200: LoginReply},
    errors=(InvalidRequest, Unauthorized, TooManyAttempts, Unavailable),
    tags=("staff",),
)
async def post_login(request: web.Request) -> web.Response:
    body = decode(LoginBody, await request.read())
    token, expires_at, must_change_password = await login(
        request.app[POOL], body.username, body.password, request.app[SETTINGS].staff_session_ttl_s
    )
    return json_response(
        {
            "token": token,
            "expires_at": expires_at.isoformat(),
            "must_change_password": must_change_password,
        }
    )


@routes.post("/admin/v1/logout")
@endpoint(
    "End the caller's session: its token stops working at once",
    auth="staff",
    responses={200: LogoutReply},
    errors=(Unauthorized, Unavailable),
    tags=("staff",),
)
async def post_logout(request: web.Request) -> web.Response:
    staff = await logout(request.app[POOL], request.headers.get("Authorization", ""))
    return json_response({"username": staff.username, "logged_out": True})
