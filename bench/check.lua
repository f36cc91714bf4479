-- wrk script: POST the body in $BODY_FILE to the URL, check every answer's status (200)
-- and value (the JSON in $ANSWER_FILE, whitespace ignored), and print one RESULT line.

local function read(path)
  local file = assert(io.open(path, "rb"))
  local text = file:read("*a")
  file:close()
  return text
end

local function squeeze(text)
  return (text:gsub("%s", ""))
end

wrk.method = "POST"
wrk.body = read(os.getenv("BODY_FILE"))
wrk.headers["Content-Type"] = "application/json"
local expected = squeeze(read(os.getenv("ANSWER_FILE")))

local threads = {}
bad_status = 0
wrong = 0

function setup(thread)
  table.insert(threads, thread)
end

function response(status, headers, body)
  if status ~= 200 then
    bad_status = bad_status + 1
  elseif squeeze(body) ~= expected then
    wrong = wrong + 1
  end
end

function done(summary, latency, requests)
  local statuses, wrongs = 0, 0
  for _, thread in ipairs(threads) do
    statuses = statuses + thread:get("bad_status")
    wrongs = wrongs + thread:get("wrong")
  end
  local errors = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d bad_status=%d wrong=%d socket_errors=%d " ..
    "p50_us=%.1f p99_us=%.1f\n",
    summary.requests, summary.duration, statuses, wrongs,
    errors.connect + errors.read + errors.write + errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
