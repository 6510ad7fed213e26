-- route: the shard each of some request ids is decided in, recorded the first time (quanyi/
-- stores/shards.py). One call per route bucket, instead of a MULTI per request id.
--
-- KEYS[1] - a route bucket hash, `PREFIX:idroute:{r:N}` (field: request digest, value: shard)
-- ARGV[1] - keep until (unix seconds): the bucket lives at least as long as the idempotency
--           fields it guards
-- ARGV[2..] - pairs: request digest, the shard its claim asks for
--
-- Returns, for each pair, the shard the request id is decided in (its own if new).

local key = KEYS[1]
local held = {}
for i = 2, #ARGV, 2 do
  if redis.call('HSETNX', key, ARGV[i], ARGV[i + 1]) == 1 then
    held[#held + 1] = tonumber(ARGV[i + 1])
  else
    held[#held + 1] = tonumber(redis.call('HGET', key, ARGV[i]))
  end
end
-- One expiry, only ever later: -1 (no expiry yet, a new bucket) is below any deadline.
local keep = tonumber(ARGV[1])
if redis.call('EXPIRETIME', key) < keep then
  redis.call('EXPIREAT', key, keep)
end
return held
