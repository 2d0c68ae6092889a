-- renew.lua: extends a live concurrency lease; an expired or released one is never brought back.
-- KEYS[1] {u:U}:lease  ZSET  request ids scored by expiry (ms)
-- ARGV[1] request id   ARGV[2] lease TTL ms
-- Reply: 1 renewed, 0 not held (expired or released)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expiry = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not expiry or tonumber(expiry) <= now then return 0 end
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], 'XX', now + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
