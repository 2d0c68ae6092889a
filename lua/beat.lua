-- beat.lua: "this node is alive" — its key with a TTL (for its role), its entry in the fleet's
-- index scored by expiry and, for a node that runs generations, in the workers' index; expired
-- entries are dropped; the reply counts the live nodes and the live workers. The indexes make
-- counting O(log n) instead of a SCAN over the whole keyspace. Time is Redis TIME.
-- KEYS[1] {fleet:<name>}:nodes   KEYS[2] {fleet:<name>}:node:<id>   KEYS[3] {fleet:<name>}:workers
-- ARGV[1] node id   ARGV[2] role   ARGV[3] TTL ms   ARGV[4] "1" if it runs generations
-- ARGV[5] the node keys' prefix ({fleet:<name>}:node:)
-- Reply: {live nodes (this one included), live workers}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
redis.call('SET', KEYS[2], ARGV[2], 'PX', ttl)
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('PEXPIRE', KEYS[1], ttl * 10)
if ARGV[4] == '1' then
  redis.call('ZADD', KEYS[3], now + ttl, ARGV[1])
end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
redis.call('PEXPIRE', KEYS[3], ttl * 10)
local workers = redis.call('ZCARD', KEYS[3])
if workers == 0 then
  -- Nodes of an older version keep no workers' index (a rolling upgrade): count them by role.
  -- Only while the index is empty, so a fleet with workers pays nothing for it.
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')) do
    local role = redis.call('GET', ARGV[5] .. id)
    if role == 'worker' or role == 'serve' then workers = workers + 1 end
  end
end
return {redis.call('ZCARD', KEYS[1]), workers}
