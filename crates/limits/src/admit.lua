-- keyward: one verification's limits, atomically (Redis runs a script alone).
-- The same decision as core::policy::Limiter::admit: every window is checked,
-- then the quota (after any refill that is due); units are consumed from all
-- of them only when all admit. A refused request consumes nothing.
--
-- A window of `window_ms` is n + 1 buckets of width w (n = min(20, window_ms),
-- w = ceil(window_ms / n)), kept as the fields of one hash named by absolute
-- bucket number: the count at `now` sums buckets c - n .. c, c = floor(now / w).
--
-- KEYS[1]  the limiter's key prefix (one per key, shared across a rotation's overlap)
-- ARGV     now (ms; 0: the Redis server's clock), cost, window count,
--          then per window: name, limit, window_ms,
--          then has_quota, remaining, refilled_at, refill_interval_ms, refill_amount
-- Returns  {outcome (0 valid, 1 rate limited, 2 usage exceeded), has_report,
--          name, limit, window_ms, remaining, reset, has_quota, quota_remaining}

local prefix = KEYS[1]
local now = tonumber(ARGV[1])
if now == 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local cost = tonumber(ARGV[2])
local nwin = tonumber(ARGV[3])

local windows = {}
local tightest, refused = nil, nil
local at = 4
for i = 1, nwin do
  local name, limit, window_ms = ARGV[at], tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2])
  at = at + 3
  if window_ms < 1 then window_ms = 1 end
  local n = math.min(20, window_ms)
  local width = math.floor((window_ms + n - 1) / n)
  local c = math.floor(now / width)
  local key = prefix .. ':w:' .. name .. ':' .. window_ms
  local fields = {}
  for k = c - n, c do fields[#fields + 1] = tostring(k) end
  local values = redis.call('HMGET', key, unpack(fields))
  local used, oldest = 0, nil
  for j = 1, #values do
    local v = tonumber(values[j]) or 0
    used = used + v
    if v > 0 and oldest == nil then oldest = c - n + (j - 1) end
  end
  local ok = used + cost <= limit
  local left = limit - used - (ok and cost or 0)
  if left < 0 then left = 0 end
  local reset = now
  if oldest ~= nil then reset = (oldest + n + 1) * width end
  if reset < now then reset = now end
  local report = {name, limit, window_ms, left, reset}
  windows[i] = {key = key, c = c, n = n, width = width}
  if not ok and refused == nil then
    refused = report
  elseif tightest == nil or left < tightest[4] then
    tightest = report
  end
end

local qkey = prefix .. ':q'
local has_quota = ARGV[at] == '1'
local remaining = nil
if has_quota then
  local stored = redis.call('HMGET', qkey, 'remaining', 'refilled_at')
  remaining = tonumber(stored[1])
  local refilled_at = tonumber(stored[2])
  if remaining == nil or refilled_at == nil then
    remaining, refilled_at = tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2])
    redis.call('HSET', qkey, 'remaining', remaining, 'refilled_at', refilled_at)
  end
  local interval, amount = tonumber(ARGV[at + 3]), tonumber(ARGV[at + 4])
  if refused == nil and interval > 0 and now >= refilled_at + interval then
    local periods = math.floor((now - refilled_at) / interval)
    refilled_at = refilled_at + periods * interval
    remaining = amount
    redis.call('HSET', qkey, 'remaining', remaining, 'refilled_at', refilled_at)
  end
end

local function answer(outcome, report)
  local out = {outcome, 0, '', 0, 0, 0, 0, 0, 0}
  if report ~= nil then
    out[2], out[3], out[4], out[5], out[6], out[7] = 1, report[1], report[2], report[3], report[4], report[5]
  end
  if has_quota then out[8], out[9] = 1, remaining end
  return out
end

if refused ~= nil then
  refused[5] = math.max(refused[5], now + 1)
  return answer(1, refused)
end
if has_quota and remaining < cost then
  return answer(2, tightest)
end
for i = 1, nwin do
  local w = windows[i]
  redis.call('HINCRBY', w.key, tostring(w.c), cost)
  -- Forget buckets that left the window, and the whole hash once it is idle.
  for _, f in ipairs(redis.call('HKEYS', w.key)) do
    if tonumber(f) < w.c - w.n then redis.call('HDEL', w.key, f) end
  end
  redis.call('PEXPIRE', w.key, (w.n + 2) * w.width)
end
if has_quota and cost > 0 then
  remaining = redis.call('HINCRBY', qkey, 'remaining', -cost)
end
return answer(0, tightest)
