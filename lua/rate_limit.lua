-- rate_limit.lua: requests of channels against their rate limits, each a token bucket of
-- `burst` tokens refilled at `rate` per second, taken or refused in one call shared by every
-- API process (quanyi/access/rate_limits.py). Requests that arrive together in one process go
-- as one call, decided in order, like claims.
--
-- Each bucket is kept as GCRA keeps it: one number, the time at which the bucket would be full
-- again ("theoretical arrival time", TAT). A request is allowed while TAT + interval - burst *
-- interval <= now, and then moves TAT on by one interval. This is exactly a token bucket (burst
-- at once, then one every interval) with one key and no separate refill step. The key expires
-- when its bucket is full again, so an idle channel holds nothing.
--
-- KEYS[k]  a channel's bucket (quanyi/stores/keys.py Keys.rate_limit): TAT, unix ms; each
--          channel of the call once
--
-- ARGV[1]  now, unix milliseconds (the API's clock)
-- ARGV[2]  n, the number of requests
-- ARGV[3 + 3(i-1)] .. for request i: k (its bucket, KEYS[k]), interval (milliseconds per
--          token, 1000 / rate; may be fractional), burst (the bucket's size, a whole number >= 1)
--
-- Returns n numbers in request order: 0 when the request is allowed (a token taken), else the
-- whole milliseconds until one token is back (>= 1). A refusal takes nothing, so refused
-- requests never push a channel's next allowed one further out.
--
-- The caller checks the arguments (numbers, in range); they are checked again here, all of them
-- before the first write, since a script has no rollback.

local now = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
if not now or not n or n < 1 or #ARGV ~= 2 + 3 * n then
  return redis.error_reply('rate_limit: bad arguments')
end
for i = 1, n do
  local a = 3 + 3 * (i - 1)
  local k, interval, burst = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  if not k or not KEYS[k] or not interval or interval <= 0 or not burst or burst < 1 then
    return redis.error_reply('rate_limit: bad arguments for request ' .. i)
  end
end

local tats = {}
local moved = {}
local waits = {}
for i = 1, n do
  local a = 3 + 3 * (i - 1)
  local k, interval, burst = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local tat = tats[k]
  if tat == nil then
    tat = tonumber(redis.call('GET', KEYS[k]))
    -- A clock behind the one that wrote the key (another API process) sees a TAT in its
    -- future: that only makes the bucket look fuller than it is, never lets more through.
    if not tat or tat < now then
      tat = now
    end
  end
  local next_tat = tat + interval
  local allowed_at = next_tat - burst * interval
  if allowed_at > now then
    waits[i] = math.max(1, math.ceil(allowed_at - now))
  else
    waits[i] = 0
    tat = next_tat
    moved[k] = true
  end
  tats[k] = tat
end

for k in pairs(moved) do
  local tat = tats[k]
  redis.call('SET', KEYS[k], string.format('%.3f', tat), 'PX', math.max(1, math.ceil(tat - now)))
end
return waits
