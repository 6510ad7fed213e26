-- uses: grant
-- revise.lua: apply an approved revision of a live campaign to the hot path, atomically. The
-- definition fields a claim reads (grant.lua grant_fields), the version, the definition
-- processes cache and the live-list version move together, so a claim decided at the same
-- moment sees the old definition or the new one, never a mix; a process holding the old one
-- is answered `stale` by its next claim and reloads. Counters (granted, spent, per customer,
-- per day, per channel) are not touched: the revision changes what is allowed, not what was
-- taken (write_quotas only sums the grants of the channels a moved map no longer names into
-- the shared remainder's qfg, from the counters themselves).
--
-- A campaign split into stock parts is revised by one call per part's hash (part 0, which
-- holds the definition, last), each keeping the part's own stock and budget: moves between the
-- parts change them (ARGV[5] "keep", reward stock "" below).
--
-- Every check comes before the first write (a script has no rollback): a refused revision
-- leaves Redis as it was.
--
-- KEYS[1]  campaign hash {c:ID}: state ver starts ends budget spent ch:<channel>
--          r:<reward>:stock|granted|dstock|limit|dlimit|cost, and with channel quotas
--          r:<reward>:qsum|qfg|qch|q:<channel>|qg:<channel> (grant.lua)
-- KEYS[2]  campaign definition {c:ID}:def (JSON, cached by each process by its version);
--          unused for a stock part other than part 0 (ARGV[2] "")
-- KEYS[3]  live-campaigns version: moved by every publication (record_events.lua, offers.lua)
-- KEYS[4]  store-ready marker: missing after Redis lost its data (counters unknown)
--
-- ARGV[1]  new definition version
-- ARGV[2]  new definition JSON; "" for a hash that holds no definition: part j > 0 of a
--          campaign split into stock parts (quanyi/stores/keys.py part_ids), whose definition
--          is part 0's
-- ARGV[3]  new live-campaigns version (a fresh random token)
-- ARGV[4]  campaign end, unix ms
-- ARGV[5]  budget in fen, "" for none, "keep" to keep the budget the hash holds, unchecked:
--          a stock part's, which moves between the parts (inventory/stock_parts.py)
-- ARGV[6]  channels, apart by "\n" (at least one)
-- ARGV[7]  n, the number of rewards
-- for reward i, with a = 7 + (i - 1) * 6:
--   ARGV[a+1] reward id        ARGV[a+2] stock          ARGV[a+3] daily stock, "" for none
--   ARGV[a+4] customer limit   ARGV[a+5] customer daily limit, "" for none
--             (stock "": keep the stock the hash holds, unchecked: a stock part's, which
--             moves between the parts as its budget does, ARGV[5] "keep")
--   ARGV[a+6] its channel quotas after the revision (moved by it or not), JSON
--             {"<channel>": n}, "" for a reward without them: checked against what each
--             channel granted and what the new stock leaves (grant.lua
--             quota_revision_refusal), then written (write_quotas). Sent for every reward with
--             quotas, so a stock cut alone that would break a reservation is refused too.
--
-- Returns {outcome, detail, figure, channel}:
--   {"store_not_ready", "", 0, ""}        the marker is missing: nothing written
--   {"campaign_not_found", "", 0, ""}     no campaign hash (a lost write): publish it again
--   {"reward_not_found", reward, 0, ""}   a reward the hash does not hold
--   {"stock_below_granted", reward, granted, ""}  the new stock is below what is granted already
--   {"budget_below_spent", "", spent, ""} the new budget is below what is spent already
--   {"quota_over_stock" | "quota_over_remaining" | "quota_below_granted" | "quota_not_kept",
--    reward, figure, channel}             a refusal of quota_revision_refusal for the reward
--                                         (channel: the quota refused, "" for the whole map)
--   {"applied", "", 0, ""}

if redis.call('EXISTS', KEYS[4]) == 0 then return {'store_not_ready', '', 0, ''} end
local campaign = KEYS[1]
if redis.call('HEXISTS', campaign, 'state') == 0 then
  return {'campaign_not_found', '', 0, ''}
end

local n = tonumber(ARGV[7])
-- reward i -> its decoded quotas (checked here, written below), nil for none.
local quotas = {}
for i = 1, n do
  local a = 7 + (i - 1) * 6
  local r = 'r:' .. ARGV[a + 1] .. ':'
  local c = redis.call('HMGET', campaign, r .. 'stock', r .. 'granted')
  if not c[1] then return {'reward_not_found', ARGV[a + 1], 0, ''} end
  local granted = tonumber(c[2] or 0)
  local stock = tonumber(ARGV[a + 2] ~= '' and ARGV[a + 2] or c[1])
  if ARGV[a + 2] ~= '' and granted > stock then
    return {'stock_below_granted', ARGV[a + 1], granted, ''}
  end
  if ARGV[a + 6] ~= '' then
    quotas[i] = cjson.decode(ARGV[a + 6])
    local refused = quota_revision_refusal(campaign, ARGV[a + 1], stock, quotas[i])
    if refused then return {refused[1], ARGV[a + 1], refused[3], refused[2]} end
  end
end
local budget = ARGV[5]
if budget ~= '' and budget ~= 'keep' then
  local spent = tonumber(redis.call('HGET', campaign, 'spent') or 0)
  if spent > tonumber(budget) then return {'budget_below_spent', '', spent, ''} end
end

-- Writes from here on.
local channels = {}
for channel in string.gmatch(ARGV[6], '[^\n]+') do channels['ch:' .. channel] = true end
for _, field in ipairs(redis.call('HKEYS', campaign)) do
  if string.sub(field, 1, 3) == 'ch:' and not channels[field] then
    redis.call('HDEL', campaign, field)
  end
end
for field in pairs(channels) do redis.call('HSET', campaign, field, 1) end
if budget == '' then
  redis.call('HDEL', campaign, 'budget')
elseif budget ~= 'keep' then
  redis.call('HSET', campaign, 'budget', budget)
end
redis.call('HSET', campaign, 'ends', ARGV[4])
for i = 1, n do
  local a = 7 + (i - 1) * 6
  local r = 'r:' .. ARGV[a + 1] .. ':'
  if ARGV[a + 2] ~= '' then redis.call('HSET', campaign, r .. 'stock', ARGV[a + 2]) end
  redis.call('HSET', campaign, r .. 'limit', ARGV[a + 4])
  if ARGV[a + 3] == '' then
    redis.call('HDEL', campaign, r .. 'dstock')
  else
    redis.call('HSET', campaign, r .. 'dstock', ARGV[a + 3])
  end
  if ARGV[a + 5] == '' then
    redis.call('HDEL', campaign, r .. 'dlimit')
  else
    redis.call('HSET', campaign, r .. 'dlimit', ARGV[a + 5])
  end
  if quotas[i] then write_quotas(campaign, ARGV[a + 1], quotas[i]) end
end
redis.call('HSET', campaign, 'ver', ARGV[1])
if ARGV[2] ~= '' then redis.call('SET', KEYS[2], ARGV[2]) end
redis.call('SET', KEYS[3], ARGV[3])
return {'applied', '', 0, ''}
