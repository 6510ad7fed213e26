-- wrk_claims.lua: replays pre-signed POST /v1/claims requests, each once, then prints the
-- figures as one JSON line for loadtests/bench.py.
--
-- wrk ... -s loadtests/wrk_claims.lua URL -- FILE THREADS
--   FILE     first line "<timestamp> <channel id> <path>", then one "<signature> <body>" per
--            request (the signature is 64 hex characters)
--   THREADS  the -t given to wrk: thread i takes lines i, i + THREADS, ... so no two threads
--            send the same request
-- Past the end of its share a thread starts over; the API then answers replays (200), which
-- bench.py notices by comparing 2xx responses with grants.

local threads = {}
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  local nthreads = tonumber(args[2]) or 1
  local f = assert(io.open(args[1], "r"))
  local ts, channel, path = f:read("*l"):match("^(%S+) (%S+) (%S+)$")
  wrk.method = "POST"
  wrk.path = path
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["X-Channel-Id"] = channel
  wrk.headers["X-Timestamp"] = ts
  lines = {}
  local i = 0
  for line in f:lines() do
    if i % nthreads == id then
      lines[#lines + 1] = line
    end
    i = i + 1
  end
  f:close()
  assert(#lines > 0, "no requests for thread " .. id)
  pos = 0
end

function request()
  pos = pos % #lines + 1
  local line = lines[pos]
  wrk.headers["X-Signature"] = line:sub(1, 64)
  return wrk.format(nil, nil, nil, line:sub(66))
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,' ..
    '"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
end
