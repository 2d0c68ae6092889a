-- enqueue.lua: adds a job to the fleet's queue unless its backlog is full.
-- Acknowledged jobs are deleted from the stream (ack.lua), so the stream's length is exactly the
-- backlog (waiting + being worked on) and nothing is ever trimmed below unacknowledged entries.
-- KEYS[1] {jobs}:stream   ARGV[1] max backlog   ARGV[2] the job (CompletionWire JSON)
-- Reply: the entry id, or {err = "BUSY <backlog>"} when full
local n = redis.call('XLEN', KEYS[1])
if n >= tonumber(ARGV[1]) then return redis.error_reply('BUSY ' .. n) end
return redis.call('XADD', KEYS[1], '*', 'job', ARGV[2])
