-- admit.lua: one atomic admission decision for one user (the rules of Domain/AdmissionLedger).
-- Every key shares the user's hash tag {u:<user>}, so the script also runs on Redis Cluster.
--
-- KEYS[1] {u:U}:win    ZSET  request ids admitted, scored by admission time (ms, Redis TIME)
-- KEYS[2] {u:U}:lease  ZSET  request ids holding a concurrency lease, scored by expiry (ms)
-- KEYS[3] {u:U}:adm    HASH  request id -> "fence:limit:remaining:reset_ms" (idempotency), and the
--                            field "#fence", the fencing counter (it restarts only after the user
--                            was idle a whole window, when no lease can still be alive)
-- KEYS[4] {u:U}:quota  HASH  admin override: rpm, concurrency (absent: defaults)
-- ARGV[1] request id   ARGV[2] default rpm   ARGV[3] default concurrency
-- ARGV[4] lease TTL ms ARGV[5] window ms
--
-- Reply: {1, fence, limit, remaining, reset_ms}  admitted (again, for a known request id whose
--                                                 generation still holds its lease: attach to it)
--        {2, limit, retry_after_ms}               refused: the window is full
--        {3, limit, retry_after_ms}               refused: too many generations at once
--        {5, fence}                               this request id is running (or queued) under
--                                                 its first admission: attach to it, own nothing
--        {4, fence}                               this request id ran in the window and has ended:
--                                                 it is never run again (replay it or refuse)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id = ARGV[1]
local rpm = tonumber(ARGV[2])
local conc = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
local window = tonumber(ARGV[5])

local q = redis.call('HMGET', KEYS[4], 'rpm', 'concurrency')
if q[1] then rpm = tonumber(q[1]) end
if q[2] then conc = tonumber(q[2]) end

-- Forget admissions that left the window (and their idempotency records); the common case, an
-- oldest entry still inside the window, costs one lookup.
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if oldest[2] and tonumber(oldest[2]) <= now - window then
  local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - window)
  for i = 1, #gone, 1000 do
    redis.call('HDEL', KEYS[3], unpack(gone, i, math.min(i + 999, #gone)))
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
  oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
end

-- 1. Idempotency: a request id already admitted is counted once and runs once. While its lease
-- lives it is running (or queued): the same grant, to attach to it. Once the lease is gone it has
-- ended, and whatever was dropped meanwhile (its transcript, its locator) it must not run again.
local prev = redis.call('HGET', KEYS[3], id)
if prev then
  local f, l, r, s = string.match(prev, '^(%d+):(%d+):(-?%d+):(%d+)$')
  local expiry = redis.call('ZSCORE', KEYS[2], id)
  if expiry and tonumber(expiry) > now then
    return {5, tonumber(f)}
  end
  return {4, tonumber(f)}
end

-- 2. Concurrency: refused here, no quota is used. Expired holders are dropped first (looked for
-- only at the limit, where they matter; the key's TTL bounds them otherwise).
local held = redis.call('ZCARD', KEYS[2])
if held >= conc then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  held = redis.call('ZCARD', KEYS[2])
end
if held >= conc then
  local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  local retry = math.max(1, math.min(1000, tonumber(first[2]) - now))
  return {3, conc, retry}
end

-- 3. Exact sliding window: at most rpm admissions in any window; a refusal is not recorded.
local count = redis.call('ZCARD', KEYS[1])
if count >= rpm then
  local k = count - rpm
  local e = redis.call('ZRANGE', KEYS[1], k, k, 'WITHSCORES')
  return {2, rpm, math.max(1, tonumber(e[2]) + window - now)}
end

local fence = redis.call('HINCRBY', KEYS[3], '#fence', 1)
redis.call('ZADD', KEYS[1], now, id)
redis.call('ZADD', KEYS[2], now + ttl, id)
local reset = (oldest[2] and tonumber(oldest[2]) or now) + window - now
local remaining = rpm - count - 1
redis.call('HSET', KEYS[3], id, fence .. ':' .. rpm .. ':' .. remaining .. ':' .. reset)
-- Everything expires once the user is idle.
redis.call('PEXPIRE', KEYS[1], window)
redis.call('PEXPIRE', KEYS[3], window)
redis.call('PEXPIRE', KEYS[2], ttl)
return {1, fence, rpm, remaining, reset}
