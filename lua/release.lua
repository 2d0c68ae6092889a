-- release.lua: frees a concurrency lease; idempotent (runs on every way a generation ends).
-- KEYS[1] {u:U}:lease  ZSET  request ids scored by expiry (ms)
-- ARGV[1] request id
-- Reply: 1 released now, 0 was not held
return redis.call('ZREM', KEYS[1], ARGV[1])
