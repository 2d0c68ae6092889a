-- unadmit.lua: takes back an admission whose request never started (refused as busy after it was
-- admitted: a full queue, a draining node, no worker in time): its window entry, lease and
-- idempotency record go, so it uses no quota and the same request id can be retried at once.
-- Only the admission with this fence is taken back (a later one of the same id is left alone).
-- KEYS[1] {u:U}:win  KEYS[2] {u:U}:lease  KEYS[3] {u:U}:adm   (as in admit.lua)
-- ARGV[1] request id   ARGV[2] fence
-- Reply: 1 taken back, 0 not found (already gone, or another admission of this id)
local prev = redis.call('HGET', KEYS[3], ARGV[1])
if not prev then return 0 end
local f = string.match(prev, '^(%d+):')
if f ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
