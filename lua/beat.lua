-- beat.lua: "this node is alive" — its key with a TTL (for its role) and its entry in the fleet's
-- index scored by expiry; expired entries are dropped; the reply counts the live nodes. The index
-- makes counting O(log n) instead of a SCAN over the whole keyspace. Time is Redis TIME.
-- KEYS[1] {fleet:<name>}:nodes   KEYS[2] {fleet:<name>}:node:<id>
-- ARGV[1] node id   ARGV[2] role   ARGV[3] TTL ms
-- Reply: live nodes (this one included)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
redis.call('SET', KEYS[2], ARGV[2], 'PX', ttl)
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('PEXPIRE', KEYS[1], ttl * 10)
return redis.call('ZCARD', KEYS[1])
