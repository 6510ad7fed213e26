-- uses: grant
-- transition.lua: move one grant along its lifecycle, atomically and exactly once. Giving back
-- what a grant took is grant.lua's give_back, which card events' claw backs share.
--
-- Live grants (granted or fulfilled) have no entry in the state hash; a grant that left that
-- state (redeemed, expired, failed, revoked) has one, so memory is spent only on the few that
-- moved on. Leaving a live state is final: the first transition wins, a repeat is reported as
-- such, and stock is returned only by the transition that leaves.
--
-- KEYS[1]  outbox stream
-- KEYS[2]  campaign hash {c:ID} (counters: r:<reward>:granted, spent; with channel quotas
--          r:<reward>:qg:<channel>, qfg)
-- KEYS[3]  grant state hash {c:ID}: grant id -> state once it is no longer live
-- KEYS[4]  customer totals bucket hash {c:ID}
-- KEYS[5]  customer daily bucket hash {c:ID} of the grant's day
-- KEYS[6]  reward daily hash {c:ID} of the grant's day
-- KEYS[7]  pending events hash: <grant id>:<event> -> "<outbox id> <event>", until the
--          ledger has it (the outbox id orders a grant's events)
-- KEYS[8]  store-ready marker: missing after Redis lost its data, until `quanyi rebuild-redis`
--          restored it (a final state or a counter missing there would give stock back twice)
--
-- ARGV[1]  grant id
-- ARGV[2]  event: fulfilled | redeemed | expired | failed | revoked | redriven
-- ARGV[3]  1 to give the stock, the customer's limit and the budget back, else 0; for
--          redriven, 1 when the failure gave them back, so they must be taken again
-- ARGV[4]  reward id
-- ARGV[5]  customer field (<reward>|<customer>)
-- ARGV[6]  unit cost
-- ARGV[7]  event to append to the outbox
-- ARGV[8]  unix second until which the campaign's grant states are kept (its end + retention)
-- ARGV[9]  the channel that made the grant (its channel_id; "goal" for a goal's): its quota is
--          given back, or taken again by a redrive (grant.lua, README "Channel quotas")
--
-- Returns {outcome, state before}:
--   {"store_not_ready", ""}  the marker is missing: nothing was written; retry after the rebuild
--   {"applied", "live"}      the transition happened ({"applied", "failed"} for a redrive)
--   {"repeated", state}      the grant is already in that state (an idempotent repeat)
--   {"refused", state}       the grant is no longer live (redeemed, expired, failed, revoked);
--                            for a redrive: not failed, or "out_of_stock" / "limit_reached" /
--                            "budget_exhausted" when what the failure gave back is gone
--                            (out_of_stock also when the channel's quota is used up)

-- Checked before anything else: an emptied store has no final states to refuse a repeat with.
if redis.call('EXISTS', KEYS[8]) == 0 then return {'store_not_ready', ''} end

local grant_id, event = ARGV[1], ARGV[2]
local state = redis.call('HGET', KEYS[3], grant_id)
local reward, customer_field, cost = ARGV[4], ARGV[5], tonumber(ARGV[6])
local channel = ARGV[9] or 'goal'
local r = 'r:' .. reward .. ':'

-- A redrive puts a failed grant back in line for fulfilment (live again).
if event == 'redriven' then
  if state ~= 'failed' then return {'refused', state or 'live'} end
  if ARGV[3] == '1' then
    local c = redis.call('HMGET', KEYS[2], r .. 'stock', r .. 'granted', r .. 'limit', 'budget',
      'spent', r .. 'dstock', r .. 'dlimit', r .. 'q:' .. channel, r .. 'qg:' .. channel,
      r .. 'qsum', r .. 'qfg')
    if tonumber(c[2] or 0) >= tonumber(c[1]) then return {'refused', 'out_of_stock'} end
    if quota_refused(c[8], c[9], c[10], c[11], c[1]) then return {'refused', 'out_of_stock'} end
    if tonumber(redis.call('HGET', KEYS[4], customer_field) or 0) >= tonumber(c[3]) then
      return {'refused', 'limit_reached'}
    end
    if c[4] and tonumber(c[5] or 0) + cost > tonumber(c[4]) then
      return {'refused', 'budget_exhausted'}
    end
    -- The grant's day still counts what the failure gave back, while that day's keys live.
    local daily_stock, daily_limit = tonumber(c[6] or 0), tonumber(c[7] or 0)
    local day_open = redis.call('EXISTS', KEYS[6]) == 1
    if daily_stock > 0 and day_open and
        tonumber(redis.call('HGET', KEYS[6], reward) or 0) >= daily_stock then
      return {'refused', 'out_of_stock'}
    end
    if daily_limit > 0 and redis.call('EXISTS', KEYS[5]) == 1 and
        tonumber(redis.call('HGET', KEYS[5], customer_field) or 0) >= daily_limit then
      return {'refused', 'limit_reached'}
    end
    redis.call('HINCRBY', KEYS[2], r .. 'granted', 1)
    if c[10] then count_channel(KEYS[2], reward, channel, c[8], 1) end
    if cost > 0 then redis.call('HINCRBY', KEYS[2], 'spent', cost) end
    redis.call('HINCRBY', KEYS[4], customer_field, 1)
    if daily_stock > 0 and day_open then redis.call('HINCRBY', KEYS[6], reward, 1) end
    if daily_limit > 0 and redis.call('EXISTS', KEYS[5]) == 1 then
      redis.call('HINCRBY', KEYS[5], customer_field, 1)
    end
  end
  redis.call('HDEL', KEYS[3], grant_id)
  local outbox_id = redis.call('XADD', KEYS[1], '*', 'e', ARGV[7])
  redis.call('HSET', KEYS[7], grant_id .. ':' .. event, outbox_id .. ' ' .. ARGV[7])
  return {'applied', 'failed'}
end

if state then
  if state == event then return {'repeated', state} end
  return {'refused', state}
end

if event ~= 'fulfilled' then
  redis.call('HSET', KEYS[3], grant_id, event)
  redis.call('EXPIREAT', KEYS[3], ARGV[8])
end
if ARGV[3] == '1' then
  give_back(KEYS[2], KEYS[4], KEYS[5], KEYS[6], reward, customer_field, cost, channel)
end
local outbox_id = redis.call('XADD', KEYS[1], '*', 'e', ARGV[7])
redis.call('HSET', KEYS[7], grant_id .. ':' .. event, outbox_id .. ' ' .. ARGV[7])
return {'applied', 'live'}
