-- preset_drop.lua: forgets a cached preset; with 'tombstone' (it was deleted) a racing fill from an
-- older read cannot bring it back for the tombstone time.
-- KEYS[1] {p:<ns>:<user>}:presets   KEYS[2] {p:…}:recent   KEYS[3] {p:…}:gone
-- ARGV[1] preset id   ARGV[2] 'tombstone' | 'forget'   ARGV[3] ttl ms
-- Reply: 1
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if ARGV[2] == 'tombstone' then
  local t = redis.call('TIME')
  redis.call('ZADD', KEYS[3], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), ARGV[1])
  redis.call('PEXPIRE', KEYS[3], ARGV[3])
end
return 1
