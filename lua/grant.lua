-- grant.lua: what every grant checks and writes, shared by the scripts that grant (claim.lua,
-- record_events.lua) and give back (transition.lua, record_events.lua). Not a script of its
-- own: quanyi/stores/scripts.py puts it in front of every script whose first line is
-- `-- uses: grant`, so each way of issuing applies the same rules in the same atomic call.
--
-- A campaign's keys all start with its hash key, `PREFIX:{q:N}:c:ID` (quanyi/stores/keys.py): the
-- helpers below name a campaign's other keys from it, inside the same hash slot.

-- The campaign fields a grant decision reads: c[1] state, c[2] ver, c[3] starts, c[4] ends,
-- c[5] ch:<channel>, c[6] budget, c[7] spent, then the reward's c[8] stock, c[9] granted,
-- c[10] dstock, c[11] limit, c[12] dlimit, c[13] cost, c[14] susp (present while the reward's
-- right is suspended: quanyi/inventory/hot_campaigns.py publishes it, in the same hash, so
-- a suspension costs a claim no extra call and is seen whole or not at all), c[QUOTA] qsum
-- (README "Channel quotas": the sum of the reward's channel quotas, absent for a reward
-- without them, which so costs a claim one field and nothing more). With quotas, a second
-- read gives c.quota (q:<channel>, the channel's quota, false when it is not named),
-- c.channel_granted (qg:<channel>, the channel's live grants), c.shared (qfg, the live grants
-- of the channels not named, goal grants included: they share the stock less qsum), and
-- c.channel, for take_grant.
local QUOTA = 15
local function grant_fields(campaign, reward, channel)
  local r = 'r:' .. reward .. ':'
  local c = redis.call('HMGET', campaign, 'state', 'ver', 'starts', 'ends', 'ch:' .. channel,
    'budget', 'spent', r .. 'stock', r .. 'granted', r .. 'dstock', r .. 'limit', r .. 'dlimit',
    r .. 'cost', r .. 'susp', r .. 'qsum')
  if c[QUOTA] then
    local q = redis.call('HMGET', campaign, r .. 'q:' .. channel, r .. 'qg:' .. channel,
      r .. 'qfg')
    c.quota, c.channel_granted, c.shared, c.channel = q[1], q[2], q[3], channel
  end
  return c
end

-- Channel quotas: whether a grant by a channel is refused by them. `quota` and `granted` are
-- the channel's (quota false when it is not named); the others share `stock` less `reserved`
-- (the quotas' sum), of which they took `shared`; `reserved` nil: the reward has no quotas.
local function quota_refused(quota, granted, reserved, shared, stock)
  if not reserved then return false end
  if quota then return tonumber(granted or 0) >= tonumber(quota) end
  return tonumber(shared or 0) >= tonumber(stock) - tonumber(reserved)
end

-- Count a grant (by 1) or its giving back (by -1) against the channel and, for a channel
-- that is not named, against the shared remainder. Only for a reward with quotas.
local function count_channel(campaign, reward, channel, named, by)
  local r = 'r:' .. reward .. ':'
  redis.call('HINCRBY', campaign, r .. 'qg:' .. channel, by)
  if not named then redis.call('HINCRBY', campaign, r .. 'qfg', by) end
end

-- Why the campaign cannot grant now, or nil: c is grant_fields(); version the caller's.
local function campaign_refusal(c, version, now)
  if not c[1] then return {'campaign_not_found', ''} end
  if c[2] ~= version then return {'stale', ''} end
  if c[1] ~= 'active' then return {'campaign_not_active', c[1]} end
  if now < tonumber(c[3]) then return {'campaign_not_active', 'not_started'} end
  if now >= tonumber(c[4]) then return {'campaign_not_active', 'ended'} end
  if not c[8] then return {'reward_not_found', ''} end
  if c[14] then return {'campaign_not_active', 'right_suspended'} end
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
  if c[QUOTA] and quota_refused(c.quota, c.channel_granted, c[QUOTA], c.shared, c[8]) then
    return {'out_of_stock', 'channel'}
  end
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
  if c[QUOTA] then count_channel(campaign, reward, c.channel, c.quota, 1) end
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

-- Give back what a grant took: its stock, the customer's limits, the budget, its channel's
-- quota. Counters of a day or a retention that is over have expired: nothing is given back
-- there. `channel` is the grant's; card events' claw backs name none: theirs are goal grants.
local function give_back(campaign, totals, daily, reward_daily, reward, customer_field, cost,
                         channel)
  local r = 'r:' .. reward .. ':'
  channel = channel or 'goal'
  redis.call('HINCRBY', campaign, r .. 'granted', -1)
  local quota = redis.call('HMGET', campaign, r .. 'qsum', r .. 'q:' .. channel)
  if quota[1] then count_channel(campaign, reward, channel, quota[2], -1) end
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

-- Moving a live reward's channel quotas (a campaign revision; lua/channel_quota.lua): `quotas`
-- the new map (channel -> n, checked in Python: channels of the campaign, integers >= 1),
-- `stock` the reward's stock after the revision. Why not, as {code, channel, figure}, or nil:
--   {"quota_not_kept", "", 0}  the reward was published without quotas: what each channel
--                              granted was never counted, so no quota can be checked
--   {"quota_below_granted", channel, granted}  a quota below what its channel granted already
--   {"quota_over_stock", "", sum}              the quotas add up to more than the stock
--   {"quota_over_remaining", "", left}         what the quotas still reserve (each less what
--                              its channel granted) is more than the stock left
local function quota_revision_refusal(campaign, reward, stock, quotas)
  local r = 'r:' .. reward .. ':'
  local held = redis.call('HMGET', campaign, r .. 'qsum', r .. 'granted')
  if not held[1] then return {'quota_not_kept', '', 0} end
  local total, reserved = 0, 0
  for channel, n in pairs(quotas) do
    local granted = tonumber(redis.call('HGET', campaign, r .. 'qg:' .. channel) or 0)
    if n < granted then return {'quota_below_granted', channel, granted} end
    total = total + n
    reserved = reserved + n - granted
  end
  if total > stock then return {'quota_over_stock', '', total} end
  local left = stock - tonumber(held[2] or 0)
  if reserved > left then return {'quota_over_remaining', '', left} end
  return nil
end

-- Write the quotas quota_revision_refusal accepted: channels no longer named (qch lists the
-- named ones, apart by ",") lose theirs, and what they granted moves to the shared remainder
-- (qfg: everything granted less what the named channels granted).
local function write_quotas(campaign, reward, quotas)
  local r = 'r:' .. reward .. ':'
  for channel in string.gmatch(redis.call('HGET', campaign, r .. 'qch') or '', '[^,]+') do
    if quotas[channel] == nil then redis.call('HDEL', campaign, r .. 'q:' .. channel) end
  end
  local total, named, names = 0, 0, {}
  for channel, n in pairs(quotas) do
    redis.call('HSET', campaign, r .. 'q:' .. channel, string.format('%d', n))
    total = total + n
    named = named + tonumber(redis.call('HGET', campaign, r .. 'qg:' .. channel) or 0)
    names[#names + 1] = channel
  end
  table.sort(names)
  local granted = tonumber(redis.call('HGET', campaign, r .. 'granted') or 0)
  redis.call('HSET', campaign, r .. 'qsum', string.format('%d', total),
    r .. 'qfg', string.format('%d', granted - named), r .. 'qch', table.concat(names, ','))
end
