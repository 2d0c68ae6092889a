-- outbox_append.lua: queues a preset write accepted while PostgreSQL is down, and in the same step
-- shows its result in the user's cache (the preset as it will be, pending; or, for a delete, gone).
-- The outbox stream has no TTL and is never trimmed: entries leave only when the replayer has
-- applied them (XDEL). Needs Redis persistence (AOF) to survive a Redis restart.
-- The user's queued bytes (the writes' JSON) are counted beside it, so one user's writes are
-- bounded in memory as well as in number (outbox_ack.lua takes them off as they are applied).
-- KEYS[1] {p:<ns>:<user>}:outbox   KEYS[2] {p:…}:presets   KEYS[3] {p:…}:recent   KEYS[4] {p:…}:gone
-- KEYS[5] {p:…}:outbox-bytes
-- ARGV[1] max queued writes   ARGV[2] the write (JSON)   ARGV[3] preset id   ARGV[4] cache ttl ms
-- ARGV[5] 'show' | 'gone'   ARGV[6] version   ARGV[7] created µs   ARGV[8] preset JSON
-- ARGV[9] max queued bytes
-- Reply: the entry id; or {err = "FULL count <n>"} when the user already has that many writes
-- queued, {err = "FULL bytes <n>"} when this write would take the user's queued bytes past the bound
local n = redis.call('XLEN', KEYS[1])
if n >= tonumber(ARGV[1]) then return redis.error_reply('FULL count ' .. n) end
local bytes = tonumber(redis.call('GET', KEYS[5]) or '0')
if n == 0 then bytes = 0 end  -- nothing waits: a count left by a lost acknowledgement is stale
if bytes + #ARGV[2] > tonumber(ARGV[9]) then return redis.error_reply('FULL bytes ' .. bytes) end
local id = redis.call('XADD', KEYS[1], '*', 'w', ARGV[2])
redis.call('SET', KEYS[5], bytes + #ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[5] == 'show' then
  redis.call('HSET', KEYS[2], ARGV[3], ARGV[6] .. '|P|' .. now .. '|' .. ARGV[8])
  redis.call('ZADD', KEYS[3], ARGV[7], ARGV[3])
  redis.call('ZREM', KEYS[4], ARGV[3])
else
  redis.call('HDEL', KEYS[2], ARGV[3])
  redis.call('ZREM', KEYS[3], ARGV[3])
  redis.call('ZADD', KEYS[4], now, ARGV[3])
end
for k = 2, 4 do redis.call('PEXPIRE', KEYS[k], ARGV[4]) end
return id
