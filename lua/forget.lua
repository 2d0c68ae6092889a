-- forget.lua: drops a request's locator only while it still names this gateway (compare and
-- delete): a stream whose id another gateway took over meanwhile keeps its locator.
-- KEYS[1] = {jobs:<fleet>}:req:<stream key>
-- ARGV[1] = the holder that may drop it (this gateway's node id)
-- Reply: 1 dropped, 0 kept (missing, or another holder's).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
