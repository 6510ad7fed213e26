-- uses: grant
-- record_events.lua: count a batch of card transactions toward the goals of live campaigns,
-- and grant what a goal reached, each event atomically: dedupe, add to progress, check the
-- goal, grant (grant.lua's checks and writes, as a claim makes them). Two events of one
-- customer can therefore never both grant, and a repeated event never counts twice.
--
-- KEYS[1]  outbox stream: grants (`g`), claw backs (`e`) and the events accepted (`t`, one
--          entry per call: {channel_id, type, received_at_ms, events: [[event id, customer,
--          amount, mcc, occurred_at_ms, reversal_of or "", outcome, counted, grants]]}, counted
--          "<campaign>/<reward>/<period>,...", grants "<grant id>:granted|revoked,...")
-- KEYS[2]  pending hash: grant id -> event, until the ledger holds the grant
-- KEYS[3]  store-ready marker (as claim.lua: nothing is decided without it)
-- KEYS[4]  live-campaigns version: the batch was made from the list of this version
-- KEYS[5]  pending events hash: <grant id>:<event> -> "<outbox id> <event>" (as transition.lua)
-- KEYS[6]  how many reversals are held (waiting for their original), kept as long as the
--          latest of them
--
-- ARGV[1]  the batch, JSON (quanyi/issuance/events.py builds it):
--   ch (the channel), type (of the events), now (unix ms), live (the version it was made
--   from), gid (the first 21 characters of this call's grant ids: each grant appends 5 of
--   its own), day (today, YYYYMMDD), day_ends (unix s the daily counters may go), hold_s
--   (seconds a reversal waits for its original), held (key prefix of the held-reversal
--   hashes), sweep (the held-reversal hash this call clears of expired holds), pending_c
--   (key prefix of the customers' pending sets), pbuckets (progress buckets),
--   campaigns: {<id>: {key (its hash key PREFIX:{c:ID}), ver, keep (unix s its counters are
--     kept until), buckets, rewards: {<id>: {right, cost, n?, a? (the goal's count and
--     amount), auto (granted on reaching), cb (claw back), aud? (audience pointer key), f?
--     (true: a right with no vendor, its grants born fulfilled)}}}}
--   events: [[id, customer, amount, mcc, occurred (unix ms), crc (CRC-32 of the customer id:
--     its bucket is crc mod the bucket count), eb (the bucket of its id), for a reversal the
--     original's id and bucket (else false, false), then for a transaction its goals:
--     [[campaign, reward, period]] (those whose window and filters it meets); for a reversal
--     [[campaign, [rewards]]]: where the original may have counted (the rewards whose goal
--     counts a transaction of its amount and merchant category)]]
--   members? (on a Redis Cluster only, where the audiences' slots are out of reach: {<audience
--     pointer key>: {<customer>: 1}} for the batch's customers who are members, read just
--     before by quanyi/issuance/memberships.py; without it the audiences are read here)
--   A campaign's other keys are named from its hash key (quanyi/stores/keys.py): :pg: the
--   customers' progress, :ev: the events counted, :cu:/:cd:/:rd: the counters a grant moves,
--   :gs grant states, :qf the customers who reached a goal (a HyperLogLog, for the funnel).
--
-- Returns JSON: {"store_not_ready": true} or {"stale": true} (nothing written: the list of
-- live campaigns moved; reload it and send again), else {"results": [...]}, one per event:
--   {s = "accepted" | "duplicate" | "rejected", code?, msg?, granted?: [grant ids],
--    revoked?: [grant ids], held?: true}; a rejection's code: event_conflict (the id was sent
--   before for another customer or amount), reversal_mismatch, already_reversed
--
-- An event a campaign counted is recorded there, by its id (`:ev:<bucket>`, field
-- `<channel>|<event id>` -> "<customer>|<amount>|<reward>@<period>,..."; "x" in front once
-- reversed or cancelled; a reversal's own: "R<original id>"), so a repeat is a duplicate (an
-- id sent again for another customer or amount is refused), and a reversal takes back
-- exactly what its original counted. An event no campaign counted is recorded nowhere in
-- Redis: repeating it changes nothing either (the ledger keeps one).
--
-- A reversal whose original has not come is held: `held..<bucket of the original's id>`
-- field `<channel>|<original id>` -> "<reversal id>|<customer>|<amount>|<reversal's
-- bucket>|<held at, unix s>", for hold_s; each call clears one hash of expired holds.

if redis.call('EXISTS', KEYS[3]) == 0 then return cjson.encode({store_not_ready = true}) end
local batch = cjson.decode(ARGV[1])
if (redis.call('GET', KEYS[4]) or '0') ~= batch.live then return cjson.encode({stale = true}) end

local outbox, pending, pending_events = KEYS[1], KEYS[2], KEYS[5]
local channel = batch.ch
local now, day, campaigns = batch.now, batch.day, batch.campaigns
-- Keys given their expiry in this call (a campaign's keys all go at one time), the audience
-- pointers read, the events for the ledger, the grant ids made.
local kept, pointers, recorded, grants_made = {}, {}, {}, 0
-- Whether any reversal waits for its original: when none does, no event looks for one.
local any_held = tonumber(redis.call('GET', KEYS[6]) or 0) > 0

-- An event: {ID, CU (customer), AMT, MCC, AT, CRC, EB (its id's bucket), REV and OB (the
-- original's id and bucket, false but for a reversal), MORE (its goals, or for a reversal
-- where to look)}; a goal: {campaign, reward, period}.
local ID, CU, AMT, MCC, AT, CRC, EB, REV, OB, MORE = 1, 2, 3, 4, 5, 6, 7, 8, 9, 10
local now_s = math.floor(now / 1000)
-- The funnel's counts outlive the campaign's counters by about as long as the offers count
-- (issuance/exposures.py KEEP_AFTER_END_S): reports read them long after the end.
local REPORT_KEEP_S = 400 * 86400

local function keep(key, until_s)
  if not kept[key] then
    redis.call('EXPIREAT', key, until_s)
    kept[key] = true
  end
end

local CROCKFORD = '0123456789ABCDEFGHJKMNPQRSTVWXYZ'
local function new_grant_id()
  local n, tail = grants_made, ''
  grants_made = grants_made + 1
  for _ = 1, 5 do
    local digit = n % 32
    tail = string.sub(CROCKFORD, digit + 1, digit + 1) .. tail
    n = math.floor(n / 32)
  end
  return batch.gid .. tail
end

-- Whether the customer is in the audience: handed over on a cluster, else read here.
local function member_of(aud, customer)
  if batch.members then
    local of_audience = batch.members[aud]
    return of_audience ~= nil and of_audience[customer] ~= nil
  end
  return is_member(aud, customer, pointers)
end

local function bucket_of(ev, buckets)
  return string.format('%d', ev[CRC] % buckets)
end

-- `counted`: "<campaign>/<reward>/<period>" of each goal moved; `grants`: "<grant id>:<event>"
-- (ids never hold "/", ":" or ",").
local function ledger(ev, outcome, counted, grants)
  recorded[#recorded + 1] = {ev[ID], ev[CU], ev[AMT], ev[MCC], ev[AT], ev[REV] or '', outcome,
    table.concat(counted, ','), table.concat(grants, ',')}
end

-- Grant the reward of a goal just reached, if its campaign, limits, stock and budget allow.
local function grant_on_goal(ev, goal, camp, def)
  local customer_field = goal[2] .. '|' .. ev[CU]
  local b = bucket_of(ev, camp.buckets)
  local totals = camp.key .. ':cu:' .. b
  local daily = camp.key .. ':cd:' .. day .. ':' .. b
  local reward_daily = camp.key .. ':rd:' .. day
  local c = grant_fields(camp.key, goal[2], 'goal')
  if campaign_refusal(c, camp.ver, now) or
      limit_refusal(c, totals, daily, reward_daily, goal[2], customer_field) then
    return nil  -- tried again by the next qualifying event
  end
  local grant_id = new_grant_id()
  local event = cjson.encode({grant_id = grant_id, campaign_id = goal[1], reward_id = goal[2],
    right_id = def.right, customer_id = ev[CU], channel_id = 'goal',
    request_id = channel .. '/' .. ev[ID] .. '/' .. goal[1] .. '/' .. goal[2],
    unit_cost = def.cost, granted_at_ms = now,
    -- A right with no vendor is fulfilled as it is granted (claims.py grant_event); nil: absent.
    fulfilled_at_ms = def.f and now or nil})
  take_grant(camp.key, c, totals, daily, reward_daily, goal[2], customer_field, camp.keep,
    batch.day_ends, outbox, pending, batch.pending_c .. ev[CU], grant_id, event)
  return grant_id
end

-- Revoke an automatic grant the reversal took the goal back from, unless it left its live
-- state already (redeemed, expired, failed, revoked): as transition.lua's revoke.
local function claw_back(ev, campaign_id, camp, reward, def, given)
  local grant_id, grant_day = string.match(given, '^(%S+) (%d+)$')
  local states = camp.key .. ':gs'
  if redis.call('HEXISTS', states, grant_id) == 1 then return nil end
  redis.call('HSET', states, grant_id, 'revoked')
  keep(states, camp.keep)
  local b = bucket_of(ev, camp.buckets)
  give_back(camp.key, camp.key .. ':cu:' .. b, camp.key .. ':cd:' .. grant_day .. ':' .. b,
    camp.key .. ':rd:' .. grant_day, reward, reward .. '|' .. ev[CU], def.cost)
  local payload = cjson.encode({grant_id = grant_id, event = 'revoked', at_ms = now,
    actor = 'goal', campaign_id = campaign_id, reward_id = reward,
    detail = {reason = 'reversal', channel_id = channel, event_id = ev[ID]}})
  local outbox_id = redis.call('XADD', outbox, '*', 'e', payload)
  redis.call('HSET', pending_events, grant_id .. ':revoked', outbox_id .. ' ' .. payload)
  return grant_id
end

-- The customer's progress hash in a campaign, and the hash of the events it counted in
-- bucket `b`.
local function progress_key(camp, ev)
  return camp.key .. ':pg:' .. bucket_of(ev, batch.pbuckets)
end

local function events_key(camp, b)
  return camp.key .. ':ev:' .. string.format('%d', b)
end

-- A held reversal: its id, customer, amount, bucket, and whether it is still waiting.
local function held_of(value)
  local rev_id, customer, amount, rev_bucket, held_at =
    string.match(value, '^([^|]+)|([^|]+)|(%d+)|(%d+)|(%d+)$')
  return rev_id, customer, tonumber(amount), tonumber(rev_bucket),
    tonumber(held_at) + batch.hold_s > now_s
end

-- The customer and amount a record is of ("" for a reversal's own record).
local function record_of(record)
  if string.sub(record, 1, 1) == 'R' then return '', -1 end
  local customer, amount = string.match(record, '^x?([^|]*)|(%d+)|')
  return customer, tonumber(amount)
end

-- Count one goal of a transaction; grant its reward once the goal is reached and not granted
-- in this period yet (a grant refused for stock, limits or budget is tried again by the next
-- qualifying event: tomorrow's daily stock, a grant given back). Returns the grant id, if any.
local function count_goal(ev, goal, camp, def, progress)
  local pfield = goal[2] .. '|' .. ev[CU] .. '|' .. goal[3]
  local n, a, given = progress_of(progress, pfield)
  n, a = n + 1, a + ev[AMT]
  local grant_id = nil
  local reached = goal_reached(n, a, def.n, def.a)
  if reached and not goal_reached(n - 1, a - ev[AMT], def.n, def.a) then
    -- Reached with this event: the customer counts as qualified (the report funnel).
    local qualified = camp.key .. ':qf'
    redis.call('PFADD', qualified, ev[CU])
    keep(qualified, camp.keep + REPORT_KEEP_S)
  end
  if def.auto and not given and reached then
    grant_id = grant_on_goal(ev, goal, camp, def)
    if grant_id then given = grant_id .. ' ' .. day end
  end
  -- A new field may be the key's first: only then may the key lack its expiry.
  if redis.call('HSET', progress, pfield, progress_value(n, a, given)) == 1 then
    keep(progress, camp.keep)
  end
  return grant_id
end

local function transaction(ev)
  local field = channel .. '|' .. ev[ID]
  -- Its reversal came first: it counts for nothing, and is recorded as such (with the
  -- reversal, so that either sent again is a repeat). Looked for only while any is held.
  local cancelled, reversal_id, reversal_bucket = false, nil, nil
  if any_held then
    local held_key = batch.held .. string.format('%d', ev[EB])
    local held = redis.call('HGET', held_key, field)
    if held then
      local rev_id, customer, amount, rev_bucket, waiting = held_of(held)
      if not waiting or (customer == ev[CU] and amount == ev[AMT]) then
        redis.call('HDEL', held_key, field)
        redis.call('DECR', KEYS[6])
        cancelled, reversal_id, reversal_bucket = waiting, rev_id, rev_bucket
      end
    end
  end

  -- The goals it counts for, by campaign (the audience decides; a cancelled event none).
  local order, counts = {}, {}
  for _, goal in ipairs(ev[MORE]) do
    local def = campaigns[goal[1]].rewards[goal[2]]
    if not counts[goal[1]] then
      counts[goal[1]] = {}
      order[#order + 1] = goal[1]
    end
    if not cancelled and (not def.aud or member_of(def.aud, ev[CU])) then
      local list = counts[goal[1]]
      list[#list + 1] = goal
    end
  end
  local counted, grants, granted, first = {}, {}, {}, true
  for _, campaign_id in ipairs(order) do
    local camp, goals = campaigns[campaign_id], counts[campaign_id]
    if cancelled or #goals > 0 then
      local what = {}
      for i, goal in ipairs(goals) do what[i] = goal[2] .. '@' .. goal[3] end
      local key = events_key(camp, ev[EB])
      -- The record is the repeat check: a campaign counts an event once.
      local record = (cancelled and 'x' or '') .. ev[CU] .. '|' ..
        string.format('%d', ev[AMT]) .. '|' .. table.concat(what, ',')
      if redis.call('HSETNX', key, field, record) == 1 then
        keep(key, camp.keep)
        if cancelled then
          local own_key = events_key(camp, reversal_bucket)
          redis.call('HSET', own_key, channel .. '|' .. reversal_id, 'R' .. ev[ID])
          keep(own_key, camp.keep)
        end
        for _, goal in ipairs(goals) do
          counted[#counted + 1] = campaign_id .. '/' .. goal[2] .. '/' .. goal[3]
          local grant_id = count_goal(ev, goal, camp, camp.rewards[goal[2]],
            progress_key(camp, ev))
          if grant_id then
            granted[#granted + 1] = grant_id
            grants[#grants + 1] = grant_id .. ':granted'
          end
        end
      elseif first then
        -- Nothing written yet: a repeat, or the id of another transaction. (A later campaign
        -- that has it already is one that counted it before: it counts it once.)
        local customer, amount = record_of(redis.call('HGET', key, field))
        if customer ~= ev[CU] or amount ~= ev[AMT] then
          return {s = 'rejected', code = 'event_conflict',
            msg = 'event ' .. ev[ID] .. ' was sent before for another customer or amount'}
        end
        return {s = 'duplicate'}
      end
      first = false
    end
  end
  local outcome = cancelled and 'cancelled' or (#counted > 0 and 'counted' or 'uncounted')
  ledger(ev, outcome, counted, grants)
  local result = {s = 'accepted'}
  if #granted > 0 then result.granted = granted end
  return result
end

-- Over a hold whose time is over, if one is still there (reversal() refused a waiting one).
local function hold(ev, held_key, original)
  if redis.call('HSET', held_key, original, ev[ID] .. '|' .. ev[CU] .. '|' ..
      string.format('%d|%d|%d', ev[AMT], ev[EB], now_s)) == 1 then
    redis.call('INCR', KEYS[6])
  end
  redis.call('EXPIREAT', held_key, now_s + batch.hold_s)
  redis.call('EXPIREAT', KEYS[6], now_s + batch.hold_s)
  any_held = true
  ledger(ev, 'held', {}, {})
  return {s = 'accepted', held = true}
end

local function reversal(ev)
  local own, original = channel .. '|' .. ev[ID], channel .. '|' .. ev[REV]
  local held_key = batch.held .. string.format('%d', ev[OB])
  if any_held then
    local held = redis.call('HGET', held_key, original)
    if held then
      local rev_id, _, _, _, waiting = held_of(held)
      if rev_id == ev[ID] then return {s = 'duplicate'} end
      if waiting then
        return {s = 'rejected', code = 'already_reversed',
          msg = 'event ' .. ev[REV] .. ' has another reversal waiting for it'}
      end
    end
  end
  -- Where the original counted, and whether this reversal was applied there already.
  local found, may_count = {}, false
  for _, place in ipairs(ev[MORE]) do
    local campaign_id, rewards = place[1], place[2]
    local camp = campaigns[campaign_id]
    if redis.call('HEXISTS', events_key(camp, ev[EB]), own) == 1 then
      return {s = 'duplicate'}
    end
    local record = redis.call('HGET', events_key(camp, ev[OB]), original)
    if record then found[#found + 1] = {campaign_id, record} end
    for _, reward in ipairs(rewards) do
      local aud = camp.rewards[reward].aud
      if not aud or member_of(aud, ev[CU]) then may_count = true end
    end
  end
  if #found == 0 then
    -- The original has not come: held until it does, if any live goal could count it for
    -- this customer (else it counted nowhere, wherever it is).
    if may_count then return hold(ev, held_key, original) end
    ledger(ev, 'uncounted', {}, {})
    return {s = 'accepted'}
  end
  -- Every check before the first write: a script has no rollback.
  for _, f in ipairs(found) do
    local record = f[2]
    if string.sub(record, 1, 1) == 'x' then
      return {s = 'rejected', code = 'already_reversed',
        msg = 'event ' .. ev[REV] .. ' was already reversed by another event'}
    end
    local customer, amount = record_of(record)
    if customer ~= ev[CU] or amount ~= ev[AMT] then
      return {s = 'rejected', code = 'reversal_mismatch',
        msg = 'a reversal must have the customer and the amount of event ' .. ev[REV]}
    end
  end
  local counted, grants, revoked = {}, {}, {}
  for _, f in ipairs(found) do
    local campaign_id, record = f[1], f[2]
    local camp = campaigns[campaign_id]
    local progress = progress_key(camp, ev)
    local what = string.match(record, '^[^|]*|%d+|(.*)$')
    for reward, period in string.gmatch(what, '([^@,]+)@([^,]+)') do
      local pfield = reward .. '|' .. ev[CU] .. '|' .. period
      local n, a, given = progress_of(progress, pfield)
      n, a = n - 1, a - ev[AMT]
      counted[#counted + 1] = campaign_id .. '/' .. reward .. '/' .. period
      local def = camp.rewards[reward]
      if def and def.auto and def.cb and given and not goal_reached(n, a, def.n, def.a) then
        local grant_id = claw_back(ev, campaign_id, camp, reward, def, given)
        if grant_id then
          given = nil  -- the goal may be reached, and granted, again
          revoked[#revoked + 1] = grant_id
          grants[#grants + 1] = grant_id .. ':revoked'
        end
      end
      redis.call('HSET', progress, pfield, progress_value(n, a, given))
    end
    redis.call('HSET', events_key(camp, ev[OB]), original, 'x' .. record)
    local own_key = events_key(camp, ev[EB])
    redis.call('HSET', own_key, own, 'R' .. ev[REV])
    keep(own_key, camp.keep)
  end
  ledger(ev, 'reversal', counted, grants)
  local result = {s = 'accepted'}
  if #revoked > 0 then result.revoked = revoked end
  return result
end

-- Holds whose original never came go when their time is over: one hash a call.
local function sweep_holds()
  local key = batch.held .. string.format('%d', batch.sweep)
  local holds = redis.call('HGETALL', key)
  for i = 1, #holds, 2 do
    local _, _, _, _, waiting = held_of(holds[i + 1])
    if not waiting then
      redis.call('HDEL', key, holds[i])
      redis.call('DECR', KEYS[6])
    end
  end
end

if any_held then sweep_holds() end
local results = {}
for i, ev in ipairs(batch.events) do
  if ev[REV] then results[i] = reversal(ev) else results[i] = transaction(ev) end
end
if #recorded > 0 then
  redis.call('XADD', outbox, '*', 't', cjson.encode({channel_id = channel, type = batch.type,
    received_at_ms = now, events = recorded}))
end
return cjson.encode({results = results})
