-- wrk script for bench/intake_load.sh: POST /v1/feedback with a distinct JSON
-- body each time (thread id + counter), so nothing is folded as a duplicate;
-- every tenth carries an email (one more GitLab call: the internal note).
local threads = 0
setup = function(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
local n = 0
request = function()
  n = n + 1
  local email = ""
  if n % 10 == 0 then
    email = string.format(',"email":"customer%d.%d@example.com"', tid, n)
  end
  local body = string.format(
    '{"kind":"bug","title":"Load test %d-%d","description":"The checkout page froze after I pressed Pay (load %d of thread %d).",' ..
    '"page_url":"https://shop.example.com/checkout","app_version":"2.3.4","context":{"user_agent":"wrk","viewport":"1280x720"}%s}',
    tid, n, n, tid, email)
  return wrk.format("POST", "/v1/feedback", {["Content-Type"] = "application/json"}, body)
end
