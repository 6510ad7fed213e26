"""Every Redis key the platform uses, built in one place.

The keys are spread over S virtual shards (the `redis_shards` setting, 1 unless the service
runs on a Redis Cluster). Each shard is one hash tag, `{q:N}`: a campaign belongs to shard
`shard_of(campaign)` and its keys, `PREFIX:{q:N}:c:ID...`, carry that tag; so do the keys
every grant of the shard's campaigns writes with them in one script (the outbox stream, the
pending-grant index, the idempotency buckets, the customers' pending sets, the store-ready
marker, the live-campaign list). One script call therefore touches one cluster slot. With one
shard (the default) every key is in `{q:0}`, which on a single Redis changes nothing.

Set S once, before the first claim: a campaign's shard is computed from its id, so changing S
moves campaigns to other keys (drain the outbox, change it, then `quanyi rebuild-redis`).

Audiences (`{a:ID}`), code pools (`{v:ID}`) and rate limits (`{ch:ID}`) keep slots of their own.
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
MAX_SHARDS = 1024


# A campaign split into stock parts (README "Splitting a hot campaign") keeps part 0 under its
# own id and part j > 0 under `<id>~<j>`: "~" is never in an id (IDENT), so no campaign's own
# keys meet a part's. MAX_STOCK_PARTS bounds the parts a claim may look at when one runs dry.
PART_MARK = "~"
MAX_STOCK_PARTS = 16


def shard_of(campaign_id: str, shards: int) -> int:
    """The shard a campaign's keys live in: the one place it is decided. Part j of a split
    campaign is j shards on from part 0, so K parts of one campaign are on K shards (when there
    are that many)."""
    if shards <= 1:
        return 0
    base, mark, part = campaign_id.partition(PART_MARK)
    offset = int(part) if mark else 0
    return (zlib.crc32(base.encode()) + offset) % shards


def part_ids(campaign_id: str, parts: int) -> list[str]:
    """The Redis ids of a campaign's stock parts, part 0 (the campaign's own id) first."""
    return [campaign_id, *(f"{campaign_id}{PART_MARK}{j}" for j in range(1, parts))]


def part_of(campaign_id: str, parts: int, customer_id: str) -> str:
    """The part a customer's claims are decided in: always the same one, so the customer's
    limits and request ids stay in one slot. Another hash than customer_bucket's, so a part's
    customers still spread over all its customer buckets."""
    if parts <= 1:
        return campaign_id
    digest = hashlib.blake2b(customer_id.encode(), digest_size=4).digest()
    j = int.from_bytes(digest, "big") % parts
    return f"{campaign_id}{PART_MARK}{j}" if j else campaign_id


def part_share(total: int, parts: int, j: int) -> int:
    """Part j's share of a stock or a budget split `parts` ways: the shares add up to `total`,
    the first `total % parts` parts taking one more."""
    return total // parts + (1 if j < total % parts else 0)


class ShardKeys:
    """The keys of one shard that are not a campaign's own: all under the shard's hash tag."""

    def __init__(self, prefix: str, shard: int, idempotency_buckets: int) -> None:
        tag = f"{prefix}:{{q:{shard}}}"
        self.shard = shard
        self.tag = tag
        self._idempotency_buckets = idempotency_buckets
        self.outbox = f"{tag}:outbox"
        self.outbox_dead = f"{tag}:outbox:dead"
        self.pending = f"{tag}:pending"
        self.pending_events = f"{tag}:pending:ev"
        self.fulfil_retry = f"{tag}:fulfil:retry"
        self.fulfil_parked = f"{tag}:fulfil:parked"
        self.fulfil_attempts = f"{tag}:fulfil:attempts"
        self.fulfil_dead = f"{tag}:fulfil:dead"
        # Present only while Redis holds what the ledger says it should: a flush takes it away
        # with the data, and claims and transitions wait until `quanyi rebuild-redis` sets it.
        self.store_ready = f"{tag}:store:ready"
        # The shard's campaigns now active (a set of ids), and a token every publication of one
        # of them moves: a process holding the list knows it is current while it holds the same
        # token (record_events.lua and offers.lua check it).
        self.live_campaigns = f"{tag}:live"
        self.live_version = f"{tag}:live:ver"
        self.held_reversals_prefix = f"{tag}:evheld:"
        # How many reversals are held: while none is, no event looks for one.
        self.held_reversals_count = f"{tag}:evheld:n"

    def campaign(self, campaign_id: str) -> str:
        return f"{self.tag}:c:{campaign_id}"

    def held_reversals(self, bucket: int) -> str:
        """Reversals that came before their original: `<channel>|<original id>` ->
        "<reversal id>|<customer>|<amount>|<reversal's bucket>|<held at, unix s>". `bucket`
        is customer_bucket(original id, EVENT_BUCKETS)."""
        return f"{self.held_reversals_prefix}{bucket}"

    def customer_pending(self, customer_id: str) -> str:
        return f"{self.tag}:pending:c:{customer_id}"

    def idempotency(self, channel_id: str, request_id: str) -> tuple[str, bytes]:
        """The bucket key and the field that hold one (channel, request id)."""
        digest = request_digest(channel_id, request_id)
        bucket = int.from_bytes(digest[:4], "big") % self._idempotency_buckets
        return f"{self.tag}:idem:{bucket}", digest


def request_digest(channel_id: str, request_id: str) -> bytes:
    return hashlib.blake2b(f"{channel_id}\0{request_id}".encode(), digest_size=16).digest()


class Keys:
    def __init__(
        self,
        prefix: str,
        idempotency_buckets: int = DEFAULT_IDEMPOTENCY_BUCKETS,
        shards: int = 1,
    ) -> None:
        if not 1 <= shards <= MAX_SHARDS:
            raise ValueError(f"shards must be 1..{MAX_SHARDS}, not {shards}")
        self.prefix = prefix
        self.shards = tuple(ShardKeys(prefix, n, idempotency_buckets) for n in range(shards))
        # Outcomes of fulfilment: a pub/sub channel, which a cluster delivers from any node.
        self.outcomes = f"{prefix}:outcomes"

    def of(self, campaign_id: str) -> ShardKeys:
        """The shard of a campaign."""
        return self.shards[shard_of(campaign_id, len(self.shards))]

    @property
    def sharded(self) -> bool:
        return len(self.shards) > 1

    def _only(self, what: str) -> ShardKeys:
        # A key of "the" shard means something only with one shard: with several, a caller
        # must say which (Keys.of, Keys.shards), or it would read a part and miss the rest.
        if len(self.shards) > 1:
            raise LookupError(f"{what} is per shard with {len(self.shards)} shards: name one")
        return self.shards[0]

    def single(self) -> ShardKeys:
        """The one shard (LookupError with several)."""
        return self._only("the shard")

    # The keys of the one shard, for callers that run on one (a single Redis, the default).

    @property
    def outbox(self) -> str:
        return self._only("outbox").outbox

    @property
    def outbox_dead(self) -> str:
        return self._only("outbox_dead").outbox_dead

    @property
    def pending(self) -> str:
        return self._only("pending").pending

    @property
    def pending_events(self) -> str:
        return self._only("pending_events").pending_events

    @property
    def fulfil_retry(self) -> str:
        return self._only("fulfil_retry").fulfil_retry

    @property
    def fulfil_parked(self) -> str:
        return self._only("fulfil_parked").fulfil_parked

    @property
    def fulfil_attempts(self) -> str:
        return self._only("fulfil_attempts").fulfil_attempts

    @property
    def fulfil_dead(self) -> str:
        return self._only("fulfil_dead").fulfil_dead

    @property
    def store_ready(self) -> str:
        return self._only("store_ready").store_ready

    @property
    def live_campaigns(self) -> str:
        return self._only("live_campaigns").live_campaigns

    @property
    def live_version(self) -> str:
        return self._only("live_version").live_version

    @property
    def held_reversals_prefix(self) -> str:
        return self._only("held_reversals").held_reversals_prefix

    @property
    def held_reversals_count(self) -> str:
        return self._only("held_reversals").held_reversals_count

    def held_reversals(self, bucket: int) -> str:
        return self._only("held_reversals").held_reversals(bucket)

    def customer_pending(self, customer_id: str) -> str:
        return self._only("customer_pending").customer_pending(customer_id)

    def idempotency(self, channel_id: str, request_id: str) -> tuple[str, bytes]:
        return self._only("idempotency").idempotency(channel_id, request_id)

    def idempotency_route(self, channel_id: str, request_id: str) -> tuple[str, bytes]:
        """With several shards: the key and the field recording the shard a (channel, request
        id) was first decided in (quanyi/stores/shards.py), in a slot of their own."""
        digest = request_digest(channel_id, request_id)
        bucket = int.from_bytes(digest[:4], "big") % 4096
        return f"{self.prefix}:idroute:{{r:{bucket}}}", digest

    # A campaign's keys: each starts with its hash key, in its shard's slot (lua/grant.lua
    # names the campaign's other keys from the hash key by suffix).

    def campaign(self, campaign_id: str) -> str:
        return self.of(campaign_id).campaign(campaign_id)

    def campaign_definition(self, campaign_id: str) -> str:
        return f"{self.campaign(campaign_id)}:def"

    def customer_totals(self, campaign_id: str, bucket: int) -> str:
        return f"{self.campaign(campaign_id)}:cu:{bucket}"

    def customer_daily(self, campaign_id: str, day: str, bucket: int) -> str:
        return f"{self.campaign(campaign_id)}:cd:{day}:{bucket}"

    def reward_daily(self, campaign_id: str, day: str) -> str:
        return f"{self.campaign(campaign_id)}:rd:{day}"

    def grant_states(self, campaign_id: str) -> str:
        return f"{self.campaign(campaign_id)}:gs"

    def offered(self, campaign_id: str) -> str:
        """The customers GET offers showed the campaign to: a HyperLogLog (the funnel's
        `eligible`; about 0.8 % error, 12 KB whatever the audience)."""
        return f"{self.campaign(campaign_id)}:of"

    def qualified(self, campaign_id: str) -> str:
        """The customers whose card events reached one of the campaign's goals: a HyperLogLog
        (lua/record_events.lua adds a customer the moment a goal is reached)."""
        return f"{self.campaign(campaign_id)}:qf"

    def progress(self, campaign_id: str, bucket: int) -> str:
        """Goal progress: `<reward>|<customer>|<period>` -> "<count>:<amount>" of the qualifying
        transactions (amount in fen), with ":<grant id> <day YYYYMMDD>" once the goal granted or
        was claimed in that period (progress_value). `bucket` is customer_bucket(customer,
        PROGRESS_BUCKETS)."""
        return f"{self.campaign(campaign_id)}:pg:{bucket}"

    def counted_events(self, campaign_id: str, bucket: int) -> str:
        """The card events a campaign counted (lua/record_events.lua): `<channel>|<event id>`
        -> "<customer>|<amount>|<reward>@<period>,...", "x" in front once reversed or
        cancelled; a reversal's own record "R<original id>". `bucket` is customer_bucket(event
        id, EVENT_BUCKETS)."""
        return f"{self.campaign(campaign_id)}:ev:{bucket}"

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

    def rate_limit(self, channel_id: str) -> str:
        """A channel's token bucket (lua/rate_limit.lua), shared by every API process."""
        return f"{self.prefix}:rl:{{ch:{channel_id}}}"


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
