-- uses: grant
-- offers.lua: everything a customer's offers and goal progress are made from, for many
-- campaigns at once, read in one call (read-only: it writes nothing). The decision (claimable,
-- and why not) is made by the caller from these figures (quanyi/issuance/offers.py), so this
-- script only gathers them. Arguments and replies are packed into few strings: encoding
-- hundreds of separate arguments costs the client more than the whole script costs Redis.
--
-- KEYS[1]      store-ready marker: absent while Redis lost its data and is not restored yet
-- KEYS[2]      live-list version: moved by every publication of a campaign
-- KEYS[2+i]    campaign i's hash {c:ID}: state starts ends budget spent
--              r:<reward>:stock|granted|dstock|limit|dlimit|cost, and for a reward with
--              channel quotas r:<reward>:qsum|q:<channel>|qg:<channel>|qfg (grant.lua); of a
--              campaign split into stock parts, the customer's part's {c:ID~j}, where their
--              claims are counted (its stock and budget are the part's alone: the caller
--              judges a dry part by the whole campaign's, inventory/stock_parts.py)
-- KEYS[2+n+j]  pointer of audience j, "VERSION:BUCKETS" (absent until imported)
--
-- The campaign's other hashes share its hash tag and are named from its key as
-- quanyi/stores/keys.py names them (KEY below is KEYS[2+i]):
--   KEY:cu:<bucket>        customer totals: <reward>|<customer> -> grants
--   KEY:cd:<day>:<bucket>  customer daily: <reward>|<customer> -> grants today
--   KEY:rd:<day>           reward daily: <reward> -> grants today
--   KEY:pg:<pbucket>       goal progress: <reward>|<customer>|<period> ->
--                          "<count>:<amount>[:<grant id> <day>]"
--
-- ARGV[1]  customer id
-- ARGV[2]  n, the number of campaigns
-- ARGV[3]  the live-list version the caller's campaigns were read at ("": do not check)
-- ARGV[4]  today, YYYYMMDD (local)
-- ARGV[5]  the customer's progress bucket (customer_bucket(customer, PROGRESS_BUCKETS))
-- ARGV[6]  the customer's bucket in each campaign, space-separated, in campaign order
-- ARGV[7]  the rewards of each campaign, campaigns separated by ";", rewards by " ", each
--          "<reward id>,<audience j (0: anyone may have it)>,<goal period ("" without goal)>,
--          <1: it has channel quotas, 0: not>"
-- ARGV[8]  the calling channel: whose quota (or share of what the quotas leave) is read
-- ARGV[9]  on a Redis Cluster only, where the audiences' slots are out of reach (no KEYS for
--          them then): the customer's membership of audience j as its j-th character, "1" or
--          "0", read just before (quanyi/issuance/memberships.py)
--
-- Returns "store_not_ready" when the marker is missing, "stale" when a campaign was published
-- since the caller read its list (read it again: a campaign may have started, paused, or
-- changed its rewards); otherwise one string per campaign, in order, of comma-separated
-- figures ("" for what the store does not hold): state,starts,ends,budget,spent; then 6 per
-- reward, from the campaign hash: stock,granted,dstock,limit,dlimit,cost; then 7 per reward,
-- the customer's: total,today,reward today (of everyone),member (1 member, 0 not, -1 no
-- audience),count,amount,claimed in period (1 or 0); then 4 per reward with channel quotas
-- only (in reward order), from the campaign hash: qsum,q:<channel>,qg:<channel>,qfg, so a
-- reward without quotas reads and returns nothing more.
--
-- Audience membership and progress are read with grant.lua's is_member and parse_progress, as
-- claims read them: the pointer and the member hash together, so an import flipping the
-- pointer is never seen half-way.

if redis.call('EXISTS', KEYS[1]) == 0 then
  return 'store_not_ready'
end
if ARGV[3] ~= '' and (redis.call('GET', KEYS[2]) or '0') ~= ARGV[3] then
  return 'stale'
end

local customer, n, day, pbucket = ARGV[1], tonumber(ARGV[2]), ARGV[4], ARGV[5]
local channel = ARGV[8]
local audiences_at = 2 + n
local members = {}
local handed = ARGV[9]

-- 1 member, 0 not, -1 no audience; grant.lua's is_member, as claims check it.
local function member(j)
  if j == 0 then return -1 end
  if members[j] == nil then
    if handed then
      members[j] = tonumber(string.sub(handed, j, j))
    else
      members[j] = is_member(KEYS[audiences_at + j], customer) and 1 or 0
    end
  end
  return members[j]
end

local buckets = {}
for b in string.gmatch(ARGV[6], '%S+') do buckets[#buckets + 1] = b end
local specs = {}
for spec in string.gmatch(ARGV[7] .. ';', '([^;]*);') do specs[#specs + 1] = spec end

local REWARD_FIELDS = {'stock', 'granted', 'dstock', 'limit', 'dlimit', 'cost'}
local function hmget(key, fields)
  if #fields == 0 then return {} end
  return redis.call('HMGET', key, unpack(fields))
end

-- One HMGET per hash and campaign, not one read per reward: the calls are what cost.
local replies = {}
for i = 1, n do
  local campaign = KEYS[2 + i]
  local rewards = {}
  local fields = {'state', 'starts', 'ends', 'budget', 'spent'}
  local quoted = {}
  for id, audience, period, quota in
      string.gmatch(specs[i], '([^, ]+),(%d+),([^, ]*),(%d)') do
    rewards[#rewards + 1] = {id, tonumber(audience), period}
    for _, name in ipairs(REWARD_FIELDS) do
      fields[#fields + 1] = 'r:' .. id .. ':' .. name
    end
    if quota == '1' then quoted[#quoted + 1] = 'r:' .. id .. ':' end
  end
  -- The quota fields follow the others in the same HMGET, so the offsets above stay put.
  local base = #fields
  for _, r in ipairs(quoted) do
    fields[#fields + 1] = r .. 'qsum'
    fields[#fields + 1] = r .. 'q:' .. channel
    fields[#fields + 1] = r .. 'qg:' .. channel
    fields[#fields + 1] = r .. 'qfg'
  end
  local c = redis.call('HMGET', campaign, unpack(fields))
  local out = {}
  for f = 1, base do out[f] = c[f] or '' end

  local customer_fields, stock_fields, goal_fields = {}, {}, {}
  for r, reward in ipairs(rewards) do
    customer_fields[r] = reward[1] .. '|' .. customer
    if c[5 + (r - 1) * 6 + 3] then stock_fields[#stock_fields + 1] = reward[1] end
    if reward[3] ~= '' then
      goal_fields[#goal_fields + 1] = customer_fields[r] .. '|' .. reward[3]
    end
  end
  local totals = hmget(campaign .. ':cu:' .. buckets[i], customer_fields)
  -- A customer with no grant at all has none today: the daily hash is read only otherwise.
  local daily_fields = {}
  for r = 1, #rewards do
    if totals[r] and c[5 + (r - 1) * 6 + 5] then daily_fields[#daily_fields + 1] = customer_fields[r] end
  end
  local today = {}
  local got = hmget(campaign .. ':cd:' .. day .. ':' .. buckets[i], daily_fields)
  for f, field in ipairs(daily_fields) do today[field] = got[f] end
  local reward_today = {}
  got = hmget(campaign .. ':rd:' .. day, stock_fields)
  for f, id in ipairs(stock_fields) do reward_today[id] = got[f] end
  local progress = hmget(campaign .. ':pg:' .. pbucket, goal_fields)

  local g = 0
  for r, reward in ipairs(rewards) do
    local count, amount, claimed = '', '', 0
    if reward[3] ~= '' then
      local value = progress[g + 1]
      if value then
        local given
        count, amount, given = parse_progress(value)
        claimed = given and 1 or 0
      end
      g = g + 1
    end
    out[#out + 1] = totals[r] or ''
    out[#out + 1] = today[customer_fields[r]] or ''
    out[#out + 1] = reward_today[reward[1]] or ''
    out[#out + 1] = member(reward[2])
    out[#out + 1] = count
    out[#out + 1] = amount
    out[#out + 1] = claimed
  end
  for f = base + 1, #fields do out[#out + 1] = c[f] or '' end
  replies[i] = table.concat(out, ',')
end
return replies
