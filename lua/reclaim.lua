-- reclaim.lua: takes over jobs whose worker went silent (pending longer than min-idle), and
-- dead-letters those delivered too often (a job that kills every worker that takes it).
-- KEYS[1] {jobs:<fleet>}:stream   KEYS[2] {jobs:<fleet>}:dead
-- ARGV[1] group  ARGV[2] consumer  ARGV[3] min idle ms  ARGV[4] max jobs  ARGV[5] max deliveries
-- Reply: { {id, job, deliveries}... claimed, {id, job, deliveries}... dead-lettered }
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', tonumber(ARGV[3]), '-', '+', tonumber(ARGV[4]))
local claimed, dead = {}, {}
for _, p in ipairs(pending) do
  local id, deliveries = p[1], tonumber(p[4])
  local entry = redis.call('XRANGE', KEYS[1], id, id)
  local job = (#entry > 0) and entry[1][2][2] or ''
  if deliveries >= tonumber(ARGV[5]) then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', 10000, '*', 'job', job, 'id', id, 'deliveries', deliveries)
    redis.call('XACK', KEYS[1], ARGV[1], id)
    redis.call('XDEL', KEYS[1], id)
    table.insert(dead, {id, job, deliveries})
  else
    local c = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3]), id)
    if #c > 0 then table.insert(claimed, {id, job, deliveries + 1}) end
  end
end
return {claimed, dead}
