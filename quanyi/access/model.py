"""What staff login and logout take and answer."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from quanyi.core.schemas import Body, Reply, TextRule


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


class LogoutReply(Reply):
    username: str
    logged_out: Literal[True]
