-- wrk script for bench/gateway_overhead.py: POST a JSON chat request on every call and
-- print one machine-readable summary line (latencies in microseconds) when the run ends.
-- BENCH_STREAM=1 asks for a streamed (SSE) answer. BENCH_COUNT=1 also counts the requests
-- sent (answered or cut off when the run ends), by building each request in Lua.
local stream = os.getenv("BENCH_STREAM") == "1"
local threads = {}

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello."}]'
  .. (stream and ',"stream":true' or '') .. ',"max_tokens":16}'

function setup(thread)
  table.insert(threads, thread)
end

if os.getenv("BENCH_COUNT") == "1" then
  sent = 0
  local built = nil
  function request()
    sent = sent + 1
    built = built or wrk.format()
    return built
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  local total = 0
  for _, thread in ipairs(threads) do
    total = total + (thread:get("sent") or 0)
  end
  -- wrk calls request() once in the first thread before the run, to check what it returns
  total = math.max(0, total - 1)
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"mean_us":%.1f,'
      .. '"errors":%d,"status_errors":%d,"sent":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.mean, e.connect + e.read + e.write + e.timeout + e.status, e.status, total))
end
