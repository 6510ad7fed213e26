-- cut_stock.lua: take stock (or budget) out of one part of a split campaign for good, as a
-- revision lowering the campaign's stock or budget does (quanyi/campaigns/revise_parts.py):
-- at most what the part has left, atomically with its claims, so a part never holds less
-- stock than it granted. The revision cuts part after part until it has the whole cut, and
-- gives back what it took when the parts together have not that much left, or the revision
-- fails before its commit. What was taken is recorded in the part (ct:<cut id>), so it is
-- given back exactly even when this script's answer never reached the caller.
--
-- KEYS[1]  the part's campaign hash {q:N}:c:ID[~j]: r:<reward>:stock|granted, budget, spent
-- KEYS[2]  the store-ready marker of its shard: missing after Redis lost its data
--
-- ARGV[1]  reward id; "" to cut the budget
-- ARGV[2]  the most to take
-- ARGV[3]  cut id (unique to one cut of one approval)
--
-- Returns what was taken (0 when the part has nothing left, or there is no such hash); -1 when
-- the marker is missing (the parts' figures are unknown until `quanyi rebuild-redis`).

local campaign, reward, most = KEYS[1], ARGV[1], tonumber(ARGV[2])
if redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
local total, taken = 'budget', 'spent'
if reward ~= '' then total, taken = 'r:' .. reward .. ':stock', 'r:' .. reward .. ':granted' end
local c = redis.call('HMGET', campaign, total, taken)
if not c[1] then return 0 end
local cut = math.min(most, tonumber(c[1]) - tonumber(c[2] or 0))
if cut <= 0 then return 0 end
redis.call('HINCRBY', campaign, total, -cut)
redis.call('HINCRBY', campaign, 'ct:' .. ARGV[3], cut)
return cut
