-- outbox_ack.lua: removes an applied (or buried) write from the user's outbox and takes its size
-- off the user's queued bytes; `bury` first copies it to the side stream of unreadable writes.
-- KEYS[1] {p:<ns>:<user>}:outbox   KEYS[2] {p:…}:outbox-bytes   KEYS[3] {p:…}:outbox-unreadable
-- ARGV[1] entry id   ARGV[2] 'ack' | 'bury'
-- Reply: the bytes taken off (0 if the entry was already gone)
local e = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #e == 0 then return 0 end
local fields = e[1][2]
local size = 0
for i = 1, #fields, 2 do if fields[i] == 'w' then size = #fields[i + 1] end end
if ARGV[2] == 'bury' then redis.call('XADD', KEYS[3], '*', unpack(fields)) end
redis.call('XDEL', KEYS[1], ARGV[1])
if redis.call('XLEN', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[2])
else
  local left = tonumber(redis.call('GET', KEYS[2]) or '0') - size
  if left > 0 then redis.call('SET', KEYS[2], left) else redis.call('DEL', KEYS[2]) end
end
return size
