-- wrk script for bench/load.py: the request (method, auth header, body) comes from the environment,
-- and done() prints one JSON line that bench/load.py parses. Loopback only.
--   NETSHRINK_BENCH_KEY   bearer token, sent as Authorization (optional)
--   NETSHRINK_BENCH_BODY  a file holding a pre-encoded request body: the request becomes a POST
--   NETSHRINK_BENCH_CTYPE its Content-Type (the multipart boundary is inside the file)
local key = os.getenv("NETSHRINK_BENCH_KEY")
if key and key ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. key
end
wrk.headers["Accept"] = "application/json"
local body_path = os.getenv("NETSHRINK_BENCH_BODY")
if body_path and body_path ~= "" then
  local f = assert(io.open(body_path, "rb"))
  wrk.method = "POST"
  wrk.body = f:read("*a")
  f:close()
  wrk.headers["Content-Type"] = os.getenv("NETSHRINK_BENCH_CTYPE")
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "max_us": %d, ' ..
    '"mean_us": %.1f, "socket_errors": %d, "non_2xx": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    latency.mean, e.connect + e.read + e.write + e.timeout, e.status))
end
