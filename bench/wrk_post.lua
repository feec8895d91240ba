-- wrk script for bench/gateway_overhead.py: POST a JSON chat request on every call and
-- print one machine-readable summary line (latencies in microseconds) when the run ends.
-- BENCH_STREAM=1 asks for a streamed (SSE) answer.
local stream = os.getenv("BENCH_STREAM") == "1"

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello."}]'
  .. (stream and ',"stream":true' or '') .. ',"max_tokens":16}'

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"mean_us":%.1f,'
      .. '"errors":%d,"status_errors":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.mean, e.connect + e.read + e.write + e.timeout + e.status, e.status))
end
