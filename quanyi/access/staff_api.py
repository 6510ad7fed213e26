"""The organisation under /admin/v1: branches, staff accounts, who the caller is, and the
caller's own password."""

from __future__ import annotations

from aiohttp import web

from quanyi.access import accounts, branches
from quanyi.access.api import request_staff
from quanyi.access.model import (
    BranchBody,
    BranchesReply,
    BranchReply,
    MeReply,
    PasswordBody,
    PasswordReply,
    ResetReply,
    StaffBody,
    StaffListReply,
    StaffPatch,
    StaffReply,
)
from quanyi.access.staff import PasswordChangeRequired, _bearer_token
from quanyi.core.errors import AlreadyExists, Forbidden, InvalidRequest, NotFound, Unauthorized
from quanyi.core.http import json_response, path_id
from quanyi.core.schemas import decode, endpoint
from quanyi.stores.appkeys import POOL

routes = web.RouteTableDef()
STAFF_TAGS = ("staff",)
BRANCH_TAGS = ("branches",)
REFUSED = (Unauthorized, Forbidden, PasswordChangeRequired)


@routes.get("/admin/v1/me")
@endpoint(
    "Who the caller is: role, branch, the branches it acts on, whether it must set a password",
    auth="staff",
    responses={200: MeReply},
    errors=(Unauthorized,),
    tags=STAFF_TAGS,
)
async def get_me(request: web.Request) -> web.Response:
    staff = await request_staff(request, pending_password=True)
    return json_response(accounts.me_json(staff))


@routes.post("/admin/v1/password")
@endpoint(
    "Set the caller's own password (required after a reset); the caller's other sessions end",
    auth="staff",
    body=PasswordBody,
    responses={200: PasswordReply},
    errors=(Unauthorized, InvalidRequest),
    tags=STAFF_TAGS,
)
async def post_password(request: web.Request) -> web.Response:
    staff = await request_staff(request, pending_password=True)
    body = decode(PasswordBody, await request.read())
    token = _bearer_token(request.headers.get("Authorization", ""))
    await accounts.change_own_password(request.app[POOL], staff, token, body.old, body.new)
    return json_response({"username": staff.username, "changed": True})


@routes.get("/admin/v1/staff")
@endpoint(
    "The staff accounts of the caller's branch and those below it (admins and auditors)",
    auth="staff",
    responses={200: StaffListReply},
    errors=REFUSED,
    tags=STAFF_TAGS,
)
async def get_staff(request: web.Request) -> web.Response:
    staff = await request_staff(request)
    return json_response({"staff": await accounts.list_accounts(request.app[POOL], staff)})


@routes.post("/admin/v1/staff")
@endpoint(
    "Create a staff account in the caller's subtree (admins); its owner sets a new password at"
    " the first login",
    auth="staff",
    body=StaffBody,
    responses={201: StaffReply},
    errors=(*REFUSED, InvalidRequest, AlreadyExists),
    tags=STAFF_TAGS,
)
async def post_staff(request: web.Request) -> web.Response:
    staff = await request_staff(request)
    staff.require_role("admin")  # before the body: a marketer learns no more than that
    body = decode(StaffBody, await request.read())
    created = await accounts.create_account(
        request.app[POOL], staff, body.username, body.password, body.role, body.branch
    )
    return json_response(created, 201)


@routes.patch("/admin/v1/staff/{username}")
@endpoint(
    "Change an account's role or branch, or disable it (admins of its subtree); its sessions end",
    auth="staff",
    body=StaffPatch,
    responses={200: StaffReply},
    errors=(*REFUSED, InvalidRequest, NotFound),
    tags=STAFF_TAGS,
)
async def patch_staff(request: web.Request) -> web.Response:
    staff = await request_staff(request)
    staff.require_role("admin")
    username = path_id(request, "username")
    patch = decode(StaffPatch, await request.read())
    changed = await accounts.change_account(
        request.app[POOL], staff, username, patch.role, patch.branch, patch.disabled
    )
    return json_response(changed)


@routes.post("/admin/v1/staff/{username}/reset-password")
@endpoint(
    "A one-time temporary password for an account (admins of its subtree), shown once; its"
    " sessions end and its next login must set a new password",
    auth="staff",
    responses={200: ResetReply},
    errors=(*REFUSED, NotFound),
    tags=STAFF_TAGS,
)
async def post_reset_password(request: web.Request) -> web.Response:
    staff = await request_staff(request)
    username = path_id(request, "username")
    temporary = await accounts.reset_password(request.app[POOL], staff, username)
    return json_response({"username": username, "temporary_password": temporary})


@routes.get("/admin/v1/branches")
@endpoint(
    "The branch tree: the caller's branch and those below it (all for head office), parents first",
    auth="staff",
    responses={200: BranchesReply},
    errors=REFUSED,
    tags=BRANCH_TAGS,
)
async def get_branches(request: web.Request) -> web.Response:
    staff = await request_staff(request)
    return json_response({"branches": await branches.list_branches(request.app[POOL], staff)})


@routes.post("/admin/v1/branches")
@endpoint(
    "Add a branch under an existing one (head-office admins); four levels at most: head"
    " office, branch, sub-branch, outlet",
    auth="staff",
    body=BranchBody,
    responses={201: BranchReply},
    errors=(*REFUSED, InvalidRequest, AlreadyExists),
    tags=BRANCH_TAGS,
)
async def post_branch(request: web.Request) -> web.Response:
    staff = await request_staff(request)
    staff.require_role("admin")
    staff.require_head_office()
    body = decode(BranchBody, await request.read())
    created = await branches.create_branch(
        request.app[POOL], staff, body.id, body.name, body.parent_id
    )
    return json_response(created, 201)
