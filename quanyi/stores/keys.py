"""Every Redis key the platform uses, built in one place.

A campaign's keys carry the hash tag `{c:ID}` so they share one cluster slot. The outbox, the
pending-grant index and the idempotency buckets are shared by all campaigns.
"""

from __future__ import annotations

import hashlib
import zlib

DEFAULT_IDEMPOTENCY_BUCKETS = 1 << 14
MAX_CUSTOMER_BUCKETS = 1 << 16
AUDIENCE_BUCKET_MEMBERS = 256


class Keys:
    def __init__(self, prefix: str, idempotency_buckets: int = DEFAULT_IDEMPOTENCY_BUCKETS) -> None:
        self.prefix = prefix
        self._idempotency_buckets = idempotency_buckets
        self.outbox = f"{prefix}:outbox"
        self.outbox_dead = f"{prefix}:outbox:dead"
        self.pending = f"{prefix}:pending"
        self.pending_events = f"{prefix}:pending:ev"
        self.fulfil_retry = f"{prefix}:fulfil:retry"
        self.fulfil_parked = f"{prefix}:fulfil:parked"
        self.fulfil_attempts = f"{prefix}:fulfil:attempts"
        self.fulfil_dead = f"{prefix}:fulfil:dead"
        self.outcomes = f"{prefix}:outcomes"
        # Present only while Redis holds what the ledger says it should: a flush takes it away
        # with the data, and claims and transitions wait until `quanyi rebuild-redis` sets it.
        self.store_ready = f"{prefix}:store:ready"

    def campaign(self, campaign_id: str) -> str:
        return f"{self.prefix}:{{c:{campaign_id}}}"

    def campaign_definition(self, campaign_id: str) -> str:
        return f"{self.prefix}:{{c:{campaign_id}}}:def"

    def customer_totals(self, campaign_id: str, bucket: int) -> str:
        return f"{self.prefix}:{{c:{campaign_id}}}:cu:{bucket}"

    def customer_daily(self, campaign_id: str, day: str, bucket: int) -> str:
        return f"{self.prefix}:{{c:{campaign_id}}}:cd:{day}:{bucket}"

    def reward_daily(self, campaign_id: str, day: str) -> str:
        return f"{self.prefix}:{{c:{campaign_id}}}:rd:{day}"

    def grant_states(self, campaign_id: str) -> str:
        return f"{self.prefix}:{{c:{campaign_id}}}:gs"

    def code_pool(self, vendor_id: str, right_id: str) -> str:
        return f"{self.prefix}:codes:{{v:{vendor_id}}}:{right_id}"

    def codes_assigned(self, vendor_id: str) -> str:
        return f"{self.prefix}:codes:{{v:{vendor_id}}}:assigned"

    def audience(self, audience_id: str) -> str:
        """The pointer of an audience ("VERSION:BUCKETS"); its members are in the hashes
        `audience_bucket` names, all under the one hash tag `{a:ID}`."""
        return f"{self.prefix}:aud:{{a:{audience_id}}}"

    def audience_versions(self, audience_id: str) -> str:
        """The last version number an import of the audience took (INCR)."""
        return f"{self.audience(audience_id)}:versions"

    def audience_bucket(self, audience_id: str, version: int, bucket: int) -> str:
        return f"{self.audience(audience_id)}:{version}:{bucket}"

    def customer_pending(self, customer_id: str) -> str:
        return f"{self.prefix}:pending:c:{customer_id}"

    def idempotency(self, channel_id: str, request_id: str) -> tuple[str, bytes]:
        """The bucket key and the field that hold one (channel, request id)."""
        digest = hashlib.blake2b(f"{channel_id}\0{request_id}".encode(), digest_size=16).digest()
        bucket = int.from_bytes(digest[:4], "big") % self._idempotency_buckets
        return f"{self.prefix}:idem:{bucket}", digest


def customer_bucket(customer_id: str, buckets: int) -> int:
    return zlib.crc32(customer_id.encode()) % buckets


def audience_bucket_of(customer_id: str | bytes, buckets: int) -> int:
    """The member hash of `customer_id` (UTF-8): the first 8 hex digits of its SHA-1, modulo the
    number of buckets (lua/audience_has.lua computes the same with redis.sha1hex)."""
    raw = customer_id.encode() if isinstance(customer_id, str) else customer_id
    return int.from_bytes(hashlib.sha1(raw).digest()[:4], "big") % buckets


def audience_buckets_for(members: int) -> int:
    """The smallest power of two that keeps an audience's hashes at about 256 members each:
    well under hash-max-listpack-entries (512), so every hash stays a compact listpack."""
    buckets = 1
    while buckets * AUDIENCE_BUCKET_MEMBERS < members:
        buckets *= 2
    return buckets


def buckets_for(total_stock: int) -> int:
    """Enough customer buckets that each stays a small listpack hash (~64 fields at most)."""
    buckets = 1
    while buckets * 64 < total_stock and buckets < MAX_CUSTOMER_BUCKETS:
        buckets *= 2
    return buckets
