-- assign_code.lua: give a grant one voucher code from its vendor's pool, once.
--
-- KEYS[1]  pool list: codes not handed out yet
-- KEYS[2]  assigned hash: grant id -> code
-- ARGV[1]  grant id
--
-- Returns the grant's code (the same one on every retry), or false when the pool is empty.
-- LPOP hands each code to exactly one caller, so two grants never share a code.

local held = redis.call('HGET', KEYS[2], ARGV[1])
if held then return held end
local code = redis.call('LPOP', KEYS[1])
if not code then return false end
redis.call('HSET', KEYS[2], ARGV[1], code)
return code
