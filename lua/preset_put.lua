-- preset_put.lua: stores presets in a user's cache. An entry is
-- "<version>|<C or P>|<stored at, ms>|<preset JSON>" (C: as the database has it; P: a write waiting
-- in the outbox; the time lets readers refresh copies older than they accept while the database is up). In `fill` mode (what the database
-- answered to a read or a write) an entry never replaces a newer version of itself, nor a pending
-- write of the same version, nor brings back a preset deleted within the tombstone time; `force`
-- (the replayer, after applying a write) replaces whatever is there. Keeps the newest `cap` presets
-- by creation time; every key lives `ttl` after the user's last cache write.
-- KEYS[1] {p:<ns>:<user>}:presets (hash id → entry)   KEYS[2] {p:…}:recent (zset id → created µs)
-- KEYS[3] {p:…}:gone (zset id → deleted at, ms)
-- ARGV[1] 'fill' | 'force'   ARGV[2] ttl ms   ARGV[3] cap   ARGV[4] tombstone ms
-- then per preset, 5 values: id, version, 'C' | 'P', created µs, preset JSON
-- Reply: how many were stored
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - tonumber(ARGV[4]))
local stored = 0
for i = 5, #ARGV, 5 do
  local id, v, flag = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
  local ok = true
  if ARGV[1] ~= 'force' then
    if redis.call('ZSCORE', KEYS[3], id) then
      ok = false
    else
      local cur = redis.call('HGET', KEYS[1], id)
      if cur then
        local sep = string.find(cur, '|', 1, true)
        local cv = tonumber(string.sub(cur, 1, sep - 1))
        local cflag = string.sub(cur, sep + 1, sep + 1)
        if cv > v or (cv == v and cflag == 'P' and flag == 'C') then ok = false end
      end
    end
  end
  if ok then
    redis.call('HSET', KEYS[1], id, v .. '|' .. flag .. '|' .. now .. '|' .. ARGV[i + 4])
    redis.call('ZADD', KEYS[2], ARGV[i + 3], id)
    redis.call('ZREM', KEYS[3], id)
    stored = stored + 1
  end
end
local extra = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[3])
if extra > 0 then
  local old = redis.call('ZRANGE', KEYS[2], 0, extra - 1)
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, extra - 1)
  redis.call('HDEL', KEYS[1], unpack(old))
end
for k = 1, 3 do redis.call('PEXPIRE', KEYS[k], ARGV[2]) end
return stored
