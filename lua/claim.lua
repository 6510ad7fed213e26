-- claim.lua: decide a batch of claims. Each claim is checked and applied as a unit: either
-- every counter moves and the grant is recorded, or nothing changes. Several claims share one
-- call only to share one round trip.
--
-- KEYS[1]  outbox stream: every grant is appended here for the ledger and fulfilment workers
-- KEYS[2]  pending hash: grant id -> event, read-your-writes until the ledger holds the grant
-- KEYS[3]  store-ready marker: present only while Redis holds everything the ledger says it
--          should (set at a fresh start or by `quanyi rebuild-redis`; a flush takes it away)
-- for claim i, with k = 3 + (i - 1) * 6:
--   KEYS[k+1]  campaign hash {c:ID}: state ver starts ends budget spent ch:<channel>
--              r:<reward>:stock|granted|dstock|limit|dlimit|cost
--   KEYS[k+2]  idempotency bucket hash: fingerprint of (channel, request id) -> grant id .. body fingerprint
--   KEYS[k+3]  customer totals bucket hash {c:ID}: <reward>|<customer> -> grants
--   KEYS[k+4]  customer daily bucket hash {c:ID} of today: <reward>|<customer> -> grants today
--   KEYS[k+5]  reward daily hash {c:ID} of today: <reward> -> grants today
--   KEYS[k+6]  the customer's pending set: grant ids not yet in the ledger
--
-- ARGV[1]  now, unix milliseconds
-- ARGV[2]  n, the number of claims
-- for claim i, with a = 2 + (i - 1) * 10:
--   ARGV[a+1] channel id          ARGV[a+2]  idempotency field
--   ARGV[a+3] body fingerprint    ARGV[a+4]  new grant id (26 chars)
--   ARGV[a+5] reward id           ARGV[a+6]  customer field (<reward>|<customer>)
--   ARGV[a+7] definition version the caller holds
--   ARGV[a+8] unix second until which idempotency and customer totals are kept
--   ARGV[a+9] unix second at which today's daily counters may go
--   ARGV[a+10] grant event to append to the outbox
--
-- Returns n replies, in order: {outcome, detail}
--   {"store_not_ready", ""}  for every claim of the call when the marker is missing: Redis lost
--                            its data and is not restored yet; nothing was written
--   {"granted", grant_id}               {"replayed", grant_id}
--   {"idempotency_conflict", ""}        {"campaign_not_found", ""}
--   {"stale", ""}  the caller's definition is out of date: reload it and retry
--   {"campaign_not_active", state|"not_started"|"ended"}
--   {"channel_not_allowed", ""}         {"reward_not_found", ""}
--   {"limit_reached", "customer"|"customer_daily"}
--   {"out_of_stock", "total"|"daily"}   {"budget_exhausted", ""}
--
-- Order matters: the store-ready marker first (an emptied store knows no request id, no
-- customer's total and no final state, so deciding anything there grants twice), then
-- idempotency (a retry never burns stock), then the campaign, then the customer's limits, then
-- stock and budget. All checks come before the first write, since a script has no rollback.

local now = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local outbox, pending = KEYS[1], KEYS[2]

local function decide(k, a)
  local campaign, idem, totals, daily, reward_daily, customer_pending =
    KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4], KEYS[k + 5], KEYS[k + 6]
  local channel, idem_field, fingerprint, grant_id, reward, customer_field =
    ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6]

  local held = redis.call('HGET', idem, idem_field)
  if held then
    if string.sub(held, 27) == fingerprint then
      return {'replayed', string.sub(held, 1, 26)}
    end
    return {'idempotency_conflict', ''}
  end

  local r = 'r:' .. reward .. ':'
  local c = redis.call('HMGET', campaign, 'state', 'ver', 'starts', 'ends', 'ch:' .. channel,
    'budget', 'spent', r .. 'stock', r .. 'granted', r .. 'dstock', r .. 'limit', r .. 'dlimit',
    r .. 'cost')
  if not c[1] then return {'campaign_not_found', ''} end
  if c[2] ~= ARGV[a + 7] then return {'stale', ''} end
  if c[1] ~= 'active' then return {'campaign_not_active', c[1]} end
  if now < tonumber(c[3]) then return {'campaign_not_active', 'not_started'} end
  if now >= tonumber(c[4]) then return {'campaign_not_active', 'ended'} end
  if not c[5] then return {'channel_not_allowed', ''} end
  if not c[8] then return {'reward_not_found', ''} end

  local limit = tonumber(c[11])
  local daily_limit = tonumber(c[12] or 0)
  if tonumber(redis.call('HGET', totals, customer_field) or 0) >= limit then
    return {'limit_reached', 'customer'}
  end
  if daily_limit > 0 and tonumber(redis.call('HGET', daily, customer_field) or 0) >= daily_limit then
    return {'limit_reached', 'customer_daily'}
  end

  local daily_stock = tonumber(c[10] or 0)
  if tonumber(c[9] or 0) >= tonumber(c[8]) then return {'out_of_stock', 'total'} end
  if daily_stock > 0 and tonumber(redis.call('HGET', reward_daily, reward) or 0) >= daily_stock then
    return {'out_of_stock', 'daily'}
  end
  local cost = tonumber(c[13] or 0)
  if c[6] and tonumber(c[7] or 0) + cost > tonumber(c[6]) then
    return {'budget_exhausted', ''}
  end

  local keep_until, day_ends, event = ARGV[a + 8], ARGV[a + 9], ARGV[a + 10]
  redis.call('HINCRBY', campaign, r .. 'granted', 1)
  if cost > 0 then redis.call('HINCRBY', campaign, 'spent', cost) end
  redis.call('HINCRBY', totals, customer_field, 1)
  redis.call('EXPIREAT', totals, keep_until)
  if daily_limit > 0 then
    redis.call('HINCRBY', daily, customer_field, 1)
    redis.call('EXPIREAT', daily, day_ends)
  end
  if daily_stock > 0 then
    redis.call('HINCRBY', reward_daily, reward, 1)
    redis.call('EXPIREAT', reward_daily, day_ends)
  end
  redis.call('HSET', idem, idem_field, grant_id .. fingerprint)
  -- One bucket serves many campaigns: keep it until the latest of their retention ends.
  if redis.call('EXPIRETIME', idem) < tonumber(keep_until) then
    redis.call('EXPIREAT', idem, keep_until)
  end
  redis.call('XADD', outbox, '*', 'g', event)
  redis.call('HSET', pending, grant_id, event)
  redis.call('SADD', customer_pending, grant_id)
  return {'granted', grant_id}
end

local replies = {}
-- One EXISTS per call, not per claim: a call carries a batch of claims.
if redis.call('EXISTS', KEYS[3]) == 0 then
  for i = 1, n do replies[i] = {'store_not_ready', ''} end
  return replies
end
for i = 1, n do
  replies[i] = decide(3 + (i - 1) * 6, 2 + (i - 1) * 10)
end
return replies
