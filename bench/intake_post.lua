-- wrk script for bench/intake_load.sh: POST /v1/feedback with a distinct JSON
-- body each time (INTAKE_RUN, a different word for each wrk run against one
-- server, + thread id + counter), so nothing is folded as a duplicate;
-- every tenth carries an email (one more GitLab call: the internal note).
--
-- Without INTAKE_RATE in the environment each connection sends as fast as it
-- is answered (the saturation run). With INTAKE_RATE=N each wrk thread sends
-- N requests per second on a fixed schedule (slot k
-- at start + k/RATE, taken in turn by whichever connection is free: a slow
-- answer holds one connection, not the schedule), and done() prints how late
-- the sends were against their slots: wrk measures latency from the actual
-- send, so a late send would hide waiting (coordinated omission); a lateness
-- near zero shows the schedule was kept and wrk's percentiles are the whole
-- story.
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } intake_timespec;
int clock_gettime(int clock, intake_timespec *ts);
]]
local ts = ffi.new("intake_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local threads = {}
local counter = 0
setup = function(thread)
  thread:set("tid", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

-- ms between slots when paced (read at load: wrk decides whether delay()
-- exists before init() runs)
local rate = tonumber(os.getenv("INTAKE_RATE") or "")
local interval = rate and rate > 0 and 1000 / rate or nil
local next_slot = nil
local slots = {}       -- slots handed out, oldest first (a FIFO)
local head, tail = 1, 0
late_hist = {}         -- lateness of sends in 0.1 ms buckets (read by done)
late_sent = 0
late_max = 0

if interval then
  -- Defined only when paced: without it wrk sends at once.
  delay = function()
    local now = now_ms()
    if not next_slot then
      next_slot = now
    end
    local slot = next_slot
    next_slot = next_slot + interval
    tail = tail + 1
    slots[tail] = slot
    local d = slot - now
    if d <= 0 then
      return 0
    end
    return math.floor(d)
  end
end

local run = os.getenv("INTAKE_RUN") or "0"
local n = 0
request = function()
  if interval and head <= tail then
    -- Timers fire in the order of their slots: this send takes the oldest.
    local late = now_ms() - slots[head]
    slots[head] = nil
    head = head + 1
    if late < 0 then
      late = 0
    end
    local b = math.floor(late * 10)
    late_hist[b] = (late_hist[b] or 0) + 1
    late_sent = late_sent + 1
    if late > late_max then
      late_max = late
    end
  end
  n = n + 1
  local email = ""
  if n % 10 == 0 then
    email = string.format(',"email":"customer%d.%d@example.com"', tid, n)
  end
  local body = string.format(
    '{"kind":"bug","title":"Load test %s-%d-%d","description":"The checkout page froze after I pressed Pay (load %d of thread %d).",' ..
    '"page_url":"https://shop.example.com/checkout","app_version":"2.3.4","context":{"user_agent":"wrk","viewport":"1280x720"}%s}',
    run, tid, n, n, tid, email)
  return wrk.format("POST", "/v1/feedback", {["Content-Type"] = "application/json"}, body)
end

done = function(summary, latency, requests)
  local hist, sent, worst = {}, 0, 0
  for _, t in ipairs(threads) do
    local s = t:get("late_sent") or 0
    if s > 0 then
      for b, c in pairs(t:get("late_hist")) do
        hist[b] = (hist[b] or 0) + c
      end
      sent = sent + s
      worst = math.max(worst, t:get("late_max"))
    end
  end
  if sent == 0 then
    return
  end
  local buckets = {}
  for b in pairs(hist) do
    table.insert(buckets, b)
  end
  table.sort(buckets)
  local function pct(p)
    local want, seen = sent * p / 100, 0
    for _, b in ipairs(buckets) do
      seen = seen + hist[b]
      if seen >= want then
        return b / 10
      end
    end
    return worst
  end
  io.write(string.format("paced sends: %d, lateness p50 %.1f ms, p99 %.1f ms, max %.1f ms\n",
    sent, pct(50), pct(99), worst))
end
