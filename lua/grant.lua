-- grant.lua: what every grant checks and writes, shared by the scripts that grant (claim.lua,
-- record_events.lua) and give back (transition.lua, record_events.lua). Not a script of its
-- own: quanyi/stores/scripts.py puts it in front of every script whose first line is
-- `-- uses: grant`, so each way of issuing applies the same rules in the same atomic call.
--
-- A campaign's keys all start with its hash key, `PREFIX:{c:ID}` (quanyi/stores/keys.py): the
-- helpers below name a campaign's other keys from it, inside the same hash slot.

-- The campaign fields a grant decision reads, in the order of GRANT_FIELDS below.
local function grant_fields(campaign, reward, channel)
  local r = 'r:' .. reward .. ':'
  return redis.call('HMGET', campaign, 'state', 'ver', 'starts', 'ends', 'ch:' .. channel,
    'budget', 'spent', r .. 'stock', r .. 'granted', r .. 'dstock', r .. 'limit', r .. 'dlimit',
    r .. 'cost')
end

-- Why the campaign cannot grant now, or nil: c is grant_fields(); version the caller's.
local function campaign_refusal(c, version, now)
  if not c[1] then return {'campaign_not_found', ''} end
  if c[2] ~= version then return {'stale', ''} end
  if c[1] ~= 'active' then return {'campaign_not_active', c[1]} end
  if now < tonumber(c[3]) then return {'campaign_not_active', 'not_started'} end
  if now >= tonumber(c[4]) then return {'campaign_not_active', 'ended'} end
  if not c[8] then return {'reward_not_found', ''} end
  return nil
end

-- Why this customer cannot have the reward now (limits, stock, budget), or nil.
local function limit_refusal(c, totals, daily, reward_daily, reward, customer_field)
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
  return nil
end

-- Take the stock, the customer's limits and the budget, and record the grant for the ledger
-- (the outbox) and for read-your-writes (pending). Only after every check passed.
local function take_grant(campaign, c, totals, daily, reward_daily, reward, customer_field,
                          keep_until, day_ends, outbox, pending, customer_pending, grant_id, event)
  local r = 'r:' .. reward .. ':'
  local cost = tonumber(c[13] or 0)
  redis.call('HINCRBY', campaign, r .. 'granted', 1)
  if cost > 0 then redis.call('HINCRBY', campaign, 'spent', cost) end
  redis.call('HINCRBY', totals, customer_field, 1)
  redis.call('EXPIREAT', totals, keep_until)
  if tonumber(c[12] or 0) > 0 then
    redis.call('HINCRBY', daily, customer_field, 1)
    redis.call('EXPIREAT', daily, day_ends)
  end
  if tonumber(c[10] or 0) > 0 then
    redis.call('HINCRBY', reward_daily, reward, 1)
    redis.call('EXPIREAT', reward_daily, day_ends)
  end
  redis.call('XADD', outbox, '*', 'g', event)
  redis.call('HSET', pending, grant_id, event)
  redis.call('SADD', customer_pending, grant_id)
end

-- Give back what a grant took: its stock, the customer's limits, the budget. Counters of a day
-- or a retention that is over have expired: nothing is given back there.
local function give_back(campaign, totals, daily, reward_daily, reward, customer_field, cost)
  local r = 'r:' .. reward .. ':'
  redis.call('HINCRBY', campaign, r .. 'granted', -1)
  if cost > 0 then redis.call('HINCRBY', campaign, 'spent', -cost) end
  if redis.call('HEXISTS', totals, customer_field) == 1 then
    redis.call('HINCRBY', totals, customer_field, -1)
  end
  if redis.call('HEXISTS', daily, customer_field) == 1 then
    redis.call('HINCRBY', daily, customer_field, -1)
  end
  if redis.call('HEXISTS', reward_daily, reward) == 1 then
    redis.call('HINCRBY', reward_daily, reward, -1)
  end
end

-- Whether the customer is a member of the audience's current version (see audience_has.lua).
-- `pointers` (optional) keeps the pointers read in this call: a script sees none change.
local function is_member(pointer_key, customer, pointers)
  local pointer = pointers and pointers[pointer_key]
  if pointer == nil then
    pointer = redis.call('GET', pointer_key)
    if pointers then pointers[pointer_key] = pointer end
  end
  if not pointer then return false end
  local version, buckets = string.match(pointer, '^(%d+):(%d+)$')
  if not version then return false end
  local bucket = tonumber(string.sub(redis.sha1hex(customer), 1, 8), 16) % tonumber(buckets)
  return redis.call('HEXISTS',
    pointer_key .. ':' .. version .. ':' .. string.format('%d', bucket), customer) == 1
end

-- A goal's progress in one period, one field "<count>:<amount>[:<grant id> <day>]" (the grant
-- it gave, automatically or claimed): count, amount, grant or nil.
local function parse_progress(value)
  if not value then return 0, 0, nil end
  local count, amount, given = string.match(value, '^(-?%d+):(-?%d+):?(.*)$')
  return tonumber(count), tonumber(amount), given ~= '' and given or nil
end

local function progress_of(progress, field)
  return parse_progress(redis.call('HGET', progress, field))
end

local function progress_value(count, amount, given)
  local value = string.format('%d:%d', count, amount)
  if given then value = value .. ':' .. given end
  return value
end

-- Whether count and amount reach a goal of `goal_count` and `goal_amount` (nil or '' when the
-- goal has none).
local function goal_reached(count, amount, goal_count, goal_amount)
  return (goal_count == nil or goal_count == '' or count >= tonumber(goal_count)) and
    (goal_amount == nil or goal_amount == '' or amount >= tonumber(goal_amount))
end
