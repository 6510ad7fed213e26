-- take_stock.lua: the first step of moving stock between the parts of a split campaign
-- (quanyi/inventory/stock_parts.py): take what a donor part can spare and record the move in
-- the donor, atomically. give_stock.lua then adds it to the receiving part, in another slot.
-- A crash between the two leaves the stock recorded here and in no part's stock: claims can
-- sell less until the move is completed (stock_parts.complete_moves), never more.
--
-- Takes half of what the donor has left (rounded up) of the reward's stock, or of the budget:
-- whichever the receiver ran out of; or what the receiver is missing, when that is more (a
-- budget short of one unit cost), up to all the donor has left. Half, so parts drying at once
-- do not pass the same stock back and forth.
--
-- KEYS[1]  the donor part's campaign hash {q:N}:c:ID[~j]: r:<reward>:stock|granted, budget,
--          spent; the move is recorded there as mv:<move id> until it is completed
-- KEYS[2]  the store-ready marker of the donor's shard: missing after Redis lost its data,
--          when the parts' figures are unknown until `quanyi rebuild-redis` writes them
--
-- ARGV[1]  reward id
-- ARGV[2]  move id (unique: a random token)
-- ARGV[3]  the receiving part's id (ID or ID~j)
-- ARGV[4]  what it ran out of: stock | budget
-- ARGV[5]  what it is missing: the least to take when the donor has that much (default 1)
--
-- Returns {stock taken, budget taken}; {0, 0} (nothing recorded) when the donor has nothing
-- to spare, no such hash, or the marker is missing.

local campaign, reward, move, receiver = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local r = 'r:' .. reward .. ':'
if redis.call('EXISTS', KEYS[2]) == 0 then return {0, 0} end
local c = redis.call('HMGET', campaign, r .. 'stock', r .. 'granted', 'budget', 'spent')
if not c[1] then return {0, 0} end
local missing = tonumber(ARGV[5] or 1)
local function share(left)
  if left <= 0 then return 0 end
  return math.max(math.ceil(left / 2), math.min(missing, left))
end
local stock, budget = 0, 0
if ARGV[4] == 'budget' then
  budget = share(tonumber(c[3] or 0) - tonumber(c[4] or 0))
else
  stock = share(tonumber(c[1]) - tonumber(c[2] or 0))
end
if stock == 0 and budget == 0 then return {0, 0} end
if stock > 0 then redis.call('HINCRBY', campaign, r .. 'stock', -stock) end
if budget > 0 then redis.call('HINCRBY', campaign, 'budget', -budget) end
redis.call('HSET', campaign, 'mv:' .. move, receiver .. '|' .. reward .. '|' .. stock .. '|' .. budget)
return {stock, budget}
