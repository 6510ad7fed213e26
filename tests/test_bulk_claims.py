"""Bulk issuance's claims (quanyi/issuance/bulk_claims.py): grant ids made many at a time are
the ids core/ids.py makes one at a time."""

from __future__ import annotations

import os

import pytest

from quanyi.core import ids
from quanyi.issuance import bulk_claims

pytestmark = pytest.mark.cluster_too


@pytest.mark.parametrize("now_ms", [0, 1, 1_764_600_000_123, 2**48 - 1])
def test_grant_ids_in_bulk_are_the_ids_made_one_by_one(monkeypatch, now_ms):
    randoms = [os.urandom(10) for _ in range(64)] + [b"\x00" * 10, b"\xff" * 10]
    monkeypatch.setattr(os, "urandom", lambda n: b"".join(randoms)[:n])
    made = bulk_claims.grant_ids(now_ms, len(randoms))
    one_by_one = []
    for r in randoms:
        monkeypatch.setattr(os, "urandom", lambda n, r=r: r[:n])
        one_by_one.append(ids.new_grant_id(now_ms))
    assert made == one_by_one
    assert all(ids.is_grant_id(g) and ids.grant_id_ms(g) == now_ms for g in made)
