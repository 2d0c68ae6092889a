-- ack.lua: a job is done (however it ended): acknowledge it and delete it from the stream.
-- KEYS[1] {jobs:<fleet>}:stream   ARGV[1] group   ARGV[2] entry id
-- Reply: 1 if it was pending, 0 if not (already acknowledged or reclaimed elsewhere)
local n = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return n
