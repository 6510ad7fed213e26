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
# Goal progress is spread over this many hashes per campaign; the card events a campaign
# counted, and the reversals waiting for their original, over this many.
PROGRESS_BUCKETS = 1 << 16
EVENT_BUCKETS = 1 << 12


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
        # The campaigns now active (a set of ids), and a counter every publication moves: a
        # process holding the list of live campaigns knows it is current while it holds the
        # same number (record_events.lua and offers.lua check it).
        self.live_campaigns = f"{prefix}:live"
        self.live_version = f"{prefix}:live:ver"

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

    def offered(self, campaign_id: str) -> str:
        """The customers GET offers showed the campaign to: a HyperLogLog (the funnel's
        `eligible`; about 0.8 % error, 12 KB whatever the audience)."""
        return f"{self.prefix}:{{c:{campaign_id}}}:of"

    def qualified(self, campaign_id: str) -> str:
        """The customers whose card events reached one of the campaign's goals: a HyperLogLog
        (lua/record_events.lua adds a customer the moment a goal is reached)."""
        return f"{self.prefix}:{{c:{campaign_id}}}:qf"

    def progress(self, campaign_id: str, bucket: int) -> str:
        """Goal progress: `<reward>|<customer>|<period>` -> "<count>:<amount>" of the qualifying
        transactions (amount in fen), with ":<grant id> <day YYYYMMDD>" once the goal granted or
        was claimed in that period (progress_value). `bucket` is customer_bucket(customer,
        PROGRESS_BUCKETS)."""
        return f"{self.prefix}:{{c:{campaign_id}}}:pg:{bucket}"

    def counted_events(self, campaign_id: str, bucket: int) -> str:
        """The card events a campaign counted (lua/record_events.lua): `<channel>|<event id>`
        -> "<customer>|<amount>|<reward>@<period>,...", "x" in front once reversed or
        cancelled; a reversal's own record "R<original id>". `bucket` is customer_bucket(event
        id, EVENT_BUCKETS)."""
        return f"{self.prefix}:{{c:{campaign_id}}}:ev:{bucket}"

    def held_reversals(self, bucket: int) -> str:
        """Reversals that came before their original: `<channel>|<original id>` ->
        "<reversal id>|<customer>|<amount>|<reversal's bucket>|<held at, unix s>". `bucket`
        is customer_bucket(original id, EVENT_BUCKETS)."""
        return f"{self.held_reversals_prefix}{bucket}"

    @property
    def held_reversals_prefix(self) -> str:
        return f"{self.prefix}:evheld:"

    @property
    def held_reversals_count(self) -> str:
        """How many reversals are held: while none is, no event looks for one."""
        return f"{self.prefix}:evheld:n"

    def code_pool(self, vendor_id: str, right_id: str) -> str:
        return f"{self.prefix}:codes:{{v:{vendor_id}}}:{right_id}"

    def codes_assigned(self, vendor_id: str) -> str:
        return f"{self.prefix}:codes:{{v:{vendor_id}}}:assigned"

    def vendor_health(self, vendor_id: str) -> str:
        """A vendor's circuit as a fulfilment worker last saw it (quanyi/vendors/health.py): a
        hash with a TTL, so the state of a worker that died ages out."""
        return f"{self.prefix}:vhealth:{{v:{vendor_id}}}"

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

    def rate_limit(self, channel_id: str) -> str:
        """A channel's token bucket (lua/rate_limit.lua), shared by every API process."""
        return f"{self.prefix}:rl:{{ch:{channel_id}}}"

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


def progress_value(count: int, amount: int, grant: str | None = None) -> str:
    """A goal progress field's value, as lua/grant.lua progress_value writes it."""
    return f"{count}:{amount}" + (f":{grant}" if grant else "")


def parse_progress(value: str | None) -> tuple[int, int, str | None]:
    """(count, amount, "<grant id> <day>" or None) of a goal progress field's value."""
    if not value:
        return 0, 0, None
    count, amount, *grant = value.split(":", 2)
    return int(count), int(amount), grant[0] if grant and grant[0] else None


def buckets_for(total_stock: int) -> int:
    """Enough customer buckets that each stays a small listpack hash (~64 fields at most)."""
    buckets = 1
    while buckets * 64 < total_stock and buckets < MAX_CUSTOMER_BUCKETS:
        buckets *= 2
    return buckets
