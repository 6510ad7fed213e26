"""What the staff APIs take and answer: login and logout, passwords, accounts, branches."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, PlainValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

from quanyi.core.schemas import Body, Flag, Ident, Reply, Text, TextRule


class LoginBody(Body):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"username": "marketer", "password": "correct horse"}]}
    )

    username: Annotated[str, TextRule(64)]
    # As typed: a password is only ever hashed, so nothing in it is masked.
    password: Annotated[str, TextRule(256, mask=False)]


class LoginReply(Reply):
    token: str = Field(description="Send as `Authorization: Bearer <token>`")
    expires_at: datetime
    must_change_password: bool = Field(
        description="true after a password reset: until POST /admin/v1/password sets a new"
        " one, this token serves that, GET /admin/v1/me and logout only (403"
        " password_change_required elsewhere)"
    )


class LogoutReply(Reply):
    username: str
    logged_out: Literal[True]


Role = Literal["marketer", "approver", "admin", "auditor", "operator"]
# Head office is HQ; a branch id is upper-case letters, digits, - and _.
BRANCH_ID_PATTERN = r"^[A-Z0-9][A-Z0-9_-]{0,31}$"
BRANCH_ID_RULE = "1-32 characters: upper-case letters, digits, - and _ (not starting with a symbol)"
BRANCH_ID = re.compile(BRANCH_ID_PATTERN.removesuffix("$") + r"\Z")


def _branch_id(value: Any) -> str:
    if not isinstance(value, str) or not BRANCH_ID.match(value):
        raise PydanticCustomError("branch_id", BRANCH_ID_RULE)
    return value


BranchId = Annotated[
    str,
    PlainValidator(_branch_id),
    WithJsonSchema({"type": "string", "pattern": BRANCH_ID_PATTERN, "maxLength": 32}),
]
Password = Annotated[str, TextRule(256, mask=False)]


class BranchBody(Body):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"id": "SZ01", "name": "Futian sub-branch", "parent_id": "SZ"}]
        }
    )

    id: BranchId
    name: Text
    parent_id: Ident


class BranchReply(Reply):
    id: str
    name: str
    parent_id: str | None = Field(description="null for head office, the root")
    depth: int = Field(description="1 head office, 2 branch, 3 sub-branch, 4 outlet")
    created_at: datetime


class BranchesReply(Reply):
    # Parents before their children; only the caller's subtree (every branch for head office).
    branches: list[BranchReply]


class StaffBody(Body):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "username": "sz-marketer",
                    "password": "a long first password",
                    "role": "marketer",
                    "branch": "SZ",
                }
            ]
        }
    )

    username: Ident
    # A first password: the account chooses its own at its first login.
    password: Password
    role: Role
    branch: Ident


class StaffPatch(Body):
    role: Role | None = None
    branch: Ident | None = None
    disabled: Flag | None = None


class PasswordBody(Body):
    old: Password
    new: Password


class StaffReply(Reply):
    username: str
    role: str
    branch: str
    disabled: bool
    must_change_password: bool
    created_at: datetime


class StaffListReply(Reply):
    staff: list[StaffReply]


class ResetReply(Reply):
    username: str
    temporary_password: str = Field(
        description="Shown once, never stored in clear; the account must set a new password"
        " at its next login"
    )


class MeReply(Reply):
    username: str
    role: str
    branch: str
    branches: list[str] = Field(description="its own branch and every branch below it")
    must_change_password: bool


class PasswordReply(Reply):
    username: str
    changed: Literal[True]
