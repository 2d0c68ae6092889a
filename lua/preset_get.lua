-- preset_get.lua: one cached preset.
-- KEYS[1] {p:<ns>:<user>}:presets   KEYS[2] {p:…}:gone   ARGV[1] preset id   ARGV[2] tombstone ms
-- Reply: {entry, now ms} (entry: "<version>|<C or P>|<stored at, ms>|<JSON>"); 'D' when deleted
-- within the tombstone time; nil when not cached
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v then return {v, now} end
local at = redis.call('ZSCORE', KEYS[2], ARGV[1])
if at and tonumber(at) > now - tonumber(ARGV[2]) then return 'D' end
return false
