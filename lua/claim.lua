-- uses: grant
-- claim.lua: decide a batch of claims. Each claim is checked and applied as a unit: either
-- every counter moves and the grant is recorded, or nothing changes. Several claims share one
-- call only to share one round trip. The checks and writes are grant.lua's, which card events
-- (record_events.lua) share.
--
-- Every key of a call is in one shard's slot (quanyi/stores/keys.py): a batch is of one shard.
-- KEYS[1]  outbox stream: every grant is appended here for the ledger and fulfilment workers
-- KEYS[2]  pending hash: grant id -> event, read-your-writes until the ledger holds the grant
-- KEYS[3]  store-ready marker: present only while Redis holds everything the ledger says it
--          should (set at a fresh start or by `quanyi rebuild-redis`; a flush takes it away)
-- for claim i, with k = 3 + (i - 1) * 6:
--   KEYS[k+1]  campaign hash {q:N}:c:ID: state ver starts ends budget spent ch:<channel>
--              r:<reward>:stock|granted|dstock|limit|dlimit|cost|susp, and for a reward with
--              channel quotas r:<reward>:qsum|qfg|q:<channel>|qg:<channel> (grant.lua)
--   KEYS[k+2]  idempotency bucket hash: fingerprint of (channel, request id) -> grant id .. body fingerprint
--   KEYS[k+3]  customer totals bucket hash {c:ID}: <reward>|<customer> -> grants
--   KEYS[k+4]  customer daily bucket hash {c:ID} of today: <reward>|<customer> -> grants today
--   KEYS[k+5]  reward daily hash {c:ID} of today: <reward> -> grants today
--   KEYS[k+6]  the customer's pending set: grant ids not yet in the ledger
--
-- ARGV[1]  now, unix milliseconds
-- ARGV[2]  n, the number of claims
-- for claim i, with a = 2 + (i - 1) * 11:
--   ARGV[a+1] channel id          ARGV[a+2]  idempotency field
--   ARGV[a+3] body fingerprint    ARGV[a+4]  new grant id (26 chars)
--   ARGV[a+5] reward id           ARGV[a+6]  customer field (<reward>|<customer>)
--   ARGV[a+7] definition version the caller holds
--   ARGV[a+8] unix second until which idempotency and customer totals are kept
--   ARGV[a+9] unix second at which today's daily counters may go
--   ARGV[a+10] grant event to append to the outbox
--   ARGV[a+11] who may have the reward, "" for anyone; the audience pointer alone (no "\n")
--              for a reward of an audience's members without a goal to claim by; else six lines
--              (apart by "\n"): the audience pointer whose members alone may have it
--              (PREFIX:aud:{a:ID}, "" for none; "!" for a customer the caller found not a
--              member, on a cluster, where the audience is out of this slot); for a reward claimed once its goal is
--              reached, the customer's progress hash (KEYS[k+1] .. ":pg:" .. bucket, in the
--              campaign's slot) and the goal's field of this period
--              (<reward>|<customer>|<period>), else "" and ""; the goal's count and amount
--              ("" when it has none); today, YYYYMMDD. Packed in one
--              argument, and the keys not declared: most claims need none of it, and every
--              argument costs each claim of a batch.
--
-- Returns n replies, in order: {outcome, detail[, count, amount]}
--   {"store_not_ready", ""}  for every claim of the call when the marker is missing: Redis lost
--                            its data and is not restored yet; nothing was written
--   {"granted", grant_id}               {"replayed", grant_id}
--   {"idempotency_conflict", ""}        {"campaign_not_found", ""}
--   {"stale", ""}  the caller's definition is out of date: reload it and retry
--   {"campaign_not_active", state|"not_started"|"ended"|"right_suspended"}  (right_suspended:
--                            the reward's right is suspended, grant.lua campaign_refusal)
--   {"channel_not_allowed", ""}         {"reward_not_found", ""}
--   {"not_eligible", "audience"}        the customer is not a member of the reward's audience
--   {"not_eligible", "goal_not_met", count, amount}  the period's progress, short of the goal
--   {"limit_reached", "customer"|"customer_daily"|"window"}  (window: claimed this period)
--   {"out_of_stock", "total"|"daily"|"channel"}   {"budget_exhausted", ""}
--                            (channel: the channel's quota, or for a channel the quotas do not
--                            name, the stock they leave, is used up)
--
-- Order matters: the store-ready marker first (an emptied store knows no request id, no
-- customer's total and no final state, so deciding anything there grants twice), then
-- idempotency (a retry never burns stock), then the campaign, then who may have the reward
-- (audience, goal), then the customer's limits, then stock and budget. All checks come before
-- the first write, since a script has no rollback.

local now = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local outbox, pending = KEYS[1], KEYS[2]
-- Audience pointers read in this call: a batch's claims are often of one audience, and within
-- one script a pointer cannot move.
local pointers = {}

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

  local c = grant_fields(campaign, reward, channel)
  local refused = campaign_refusal(c, ARGV[a + 7], now)
  if refused then return refused end
  if not c[5] then return {'channel_not_allowed', ''} end

  local who = ARGV[a + 11]
  local progress, goal_field, count, amount, day = nil, '', 0, 0, nil
  if who ~= '' then
    local pointer, goal_count, goal_amount = who, nil, nil
    if string.find(who, '\n', 1, true) then
      pointer, progress, goal_field, goal_count, goal_amount, day =
        string.match(who, '^([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)$')
    end
    -- "!": on a cluster the caller read membership itself (the audience is in another slot)
    -- and found none (quanyi/issuance/claims.py _member_on_cluster).
    if pointer == '!' then return {'not_eligible', 'audience'} end
    if pointer ~= '' then
      local customer = string.sub(customer_field, #reward + 2)
      if not is_member(pointer, customer, pointers) then return {'not_eligible', 'audience'} end
    end
    if goal_field ~= '' then
      local goal_grant
      count, amount, goal_grant = progress_of(progress, goal_field)
      if goal_grant then return {'limit_reached', 'window'} end
      if not goal_reached(count, amount, goal_count, goal_amount) then
        return {'not_eligible', 'goal_not_met', count, amount}
      end
    end
  end

  refused = limit_refusal(c, totals, daily, reward_daily, reward, customer_field)
  if refused then return refused end

  local keep_until = ARGV[a + 8]
  take_grant(campaign, c, totals, daily, reward_daily, reward, customer_field, keep_until,
    ARGV[a + 9], outbox, pending, customer_pending, grant_id, ARGV[a + 10])
  if goal_field ~= '' then
    redis.call('HSET', progress, goal_field, progress_value(count, amount, grant_id .. ' ' .. day))
    redis.call('EXPIREAT', progress, keep_until)
  end
  redis.call('HSET', idem, idem_field, grant_id .. fingerprint)
  -- One bucket serves many campaigns: keep it until the latest of their retention ends.
  if redis.call('EXPIRETIME', idem) < tonumber(keep_until) then
    redis.call('EXPIREAT', idem, keep_until)
  end
  return {'granted', grant_id}
end

local replies = {}
-- One EXISTS per call, not per claim: a call carries a batch of claims.
if redis.call('EXISTS', KEYS[3]) == 0 then
  for i = 1, n do replies[i] = {'store_not_ready', ''} end
  return replies
end
for i = 1, n do
  replies[i] = decide(3 + (i - 1) * 6, 2 + (i - 1) * 11)
end
return replies
