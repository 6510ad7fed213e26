-- lease_due.lua: take the parked fulfilments that are due, leasing them to the caller.
--
-- KEYS[1]  retry sorted set: grant id scored by the unix millisecond it is due
-- ARGV[1]  now, unix ms
-- ARGV[2]  lease end, unix ms: a taker that dies leaves its items due again then
-- ARGV[3]  how many at most
--
-- Returns the grant ids taken. Their score moves to the lease end, so no one else takes them
-- until then; the taker removes them once the outcome is recorded.

local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, grant_id in ipairs(due) do
  redis.call('ZADD', KEYS[1], 'XX', ARGV[2], grant_id)
end
return due
