#!lua
-- The shebang (no flags) makes Redis refuse the whole script before it runs when it cannot write
-- (OOM under maxmemory, READONLY, MISCONF), never between two of its writes.
--[[
Switches one rebuilt snapshot over, only while the rebuild's fencing token holds the lease: marks
the shadow hash with the rebuild id (so the deletion of unswitched snapshots spares it) and RENAMEs
it over its live key (atomic: a reader sees the old or the new snapshot, never none).

KEYS[1]  the rebuild lease: '<token> <holder JSON>'
KEYS[2]  the shadow hash
KEYS[3]  its live key
ARGV[1]  the rebuild's fencing token
ARGV[2]  the rebuild id
Reply    1 switched, 0 no such shadow hash (switched before); or the error RS_REBUILD_LEASE_LOST
]]
local held = redis.call('GET', KEYS[1])
if not held or string.match(held, '^%d+') ~= ARGV[1] then
  return redis.error_reply('RS_REBUILD_LEASE_LOST the rebuild lease is no longer held by fencing token ' .. ARGV[1])
end
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
redis.call('HSET', KEYS[2], '_rebuild', ARGV[2])
redis.call('RENAME', KEYS[2], KEYS[3])
return 1
