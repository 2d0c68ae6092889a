-- preset_get.lua: one cached preset.
-- KEYS[1] {p:<ns>:<user>}:presets   KEYS[2] {p:…}:gone   ARGV[1] preset id   ARGV[2] tombstone ms
-- Reply: the entry ("<version>|<C or P>|<JSON>"); 'D' when deleted within the tombstone time; nil
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v then return v end
local at = redis.call('ZSCORE', KEYS[2], ARGV[1])
if at then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if tonumber(at) > now - tonumber(ARGV[2]) then return 'D' end
end
return false
