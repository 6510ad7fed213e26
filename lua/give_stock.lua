-- give_stock.lua: the second step of moving stock between the parts of a split campaign: add
-- what take_stock.lua took from the donor to the receiving part, exactly once. The receiver
-- keeps a marker of every move it received (mi:<move id>, never removed while the campaign's
-- hash lives), so a move completed twice (a crash after this step, a second process finishing
-- the same move) adds nothing the second time.
--
-- KEYS[1]  the receiving part's campaign hash {q:N}:c:ID[~j]
-- KEYS[2]  the store-ready marker of its shard (missing: Redis lost its data, see -1 below)
--
-- ARGV[1]  reward id
-- ARGV[2]  move id
-- ARGV[3]  stock to add
-- ARGV[4]  budget to add (fen)
--
-- Returns 1 when added now, 0 when the move was added before, -1 when the hash or the marker
-- is gone (Redis lost them: `quanyi rebuild-redis` rebuilds the parts from the ledger; the donor keeps the
-- move recorded until then, so the stock is counted nowhere twice).

local campaign, reward, move = KEYS[1], ARGV[1], ARGV[2]
local stock, budget = tonumber(ARGV[3]), tonumber(ARGV[4])
if redis.call('EXISTS', campaign) == 0 or redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
if redis.call('HSETNX', campaign, 'mi:' .. move, 1) == 0 then return 0 end
if stock > 0 then redis.call('HINCRBY', campaign, 'r:' .. reward .. ':stock', stock) end
if budget > 0 then redis.call('HINCRBY', campaign, 'budget', budget) end
return 1
