"""What the audience API takes and answers, and an audience as the service hands it around."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from quanyi.core.schemas import Body, Ident, Reply, Text


class AudienceBody(Body):
    id: Ident
    name: Text
    branch: Ident


class AudienceCreated(Reply):
    id: str
    name: str
    branch: str
    version: int
    members: int


class AudienceReply(AudienceCreated):
    # null until the first import
    imported_at: str | None
    imported_by: str | None


class LineError(Reply):
    # the line of a CSV file (the first is 1) or the row of a Parquet file; the value itself is
    # never repeated (it may be a card number)
    line: int
    reason: str


class ImportReply(Reply):
    id: str
    version: int
    members: int
    rejected: int
    # the first 100 rejected lines
    errors: list[LineError]


@dataclass(frozen=True)
class Audience:
    id: str
    name: str
    branch: str
    version: int
    members: int
    imported_at: datetime | None
    imported_by: str | None

    @classmethod
    def from_row(cls, row: Any) -> Audience:
        return cls(
            id=row["id"],
            name=row["name"],
            branch=row["branch"],
            version=row["version"],
            members=row["members"],
            imported_at=row["imported_at"],
            imported_by=row["imported_by"],
        )

    def created_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "branch": self.branch,
            "version": self.version,
            "members": self.members,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            **self.created_json(),
            "imported_at": self.imported_at.isoformat() if self.imported_at else None,
            "imported_by": self.imported_by,
        }


@dataclass(frozen=True)
class ImportReport:
    id: str
    version: int
    members: int
    rejected: int
    errors: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "version": self.version,
            "members": self.members,
            "rejected": self.rejected,
            "errors": self.errors,
        }
