-- enqueue.lua: adds a job to the fleet's queue unless its backlog is full, and records which
-- gateway holds its stream (the locator: cross-node cancel and attach find the stream by it).
-- Acknowledged jobs are deleted from the stream (ack.lua), so the stream's length is exactly the
-- backlog (waiting + being handed over) and nothing is ever trimmed below unacknowledged entries.
-- KEYS[1] {jobs:<fleet>}:stream   KEYS[2] {jobs:<fleet>}:req:<owner-length>:<owner>:<request_id>
-- ARGV[1] max backlog   ARGV[2] the job (CompletionWire JSON)   ARGV[3] gateway node id
-- ARGV[4] locator TTL ms
-- Reply: {'OK', entry id}; {'DUP', gateway} when the request_id already has a stream (nothing is
-- added: the caller attaches to it); or {err = "BUSY <backlog>"} when the backlog is full
local holder = redis.call('GET', KEYS[2])
if holder then return {'DUP', holder} end
local n = redis.call('XLEN', KEYS[1])
if n >= tonumber(ARGV[1]) then return redis.error_reply('BUSY ' .. n) end
local id = redis.call('XADD', KEYS[1], '*', 'job', ARGV[2])
redis.call('SET', KEYS[2], ARGV[3], 'PX', tonumber(ARGV[4]))
return {'OK', id}
