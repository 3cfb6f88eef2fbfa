#!lua
-- The shebang (no flags) makes Redis refuse the whole script before it runs when it cannot write
-- (OOM under maxmemory, READONLY, MISCONF), never between two of its writes.
--[[
HSET of the rebuild state (phase, progress, id) by a rebuild, only while its fencing token holds
the lease.

KEYS[1]  the rebuild lease: '<token> <holder JSON>' (same slot as the state on a cluster), or
         any key holding the token in the hash's slot (see fenced-set-2.lua)
KEYS[2]  the hash
ARGV[1]  the rebuild's fencing token
ARGV[2..] field, value, field, value, ...
Reply    'OK', or the error RS_REBUILD_LEASE_LOST (nothing written) when the token does not hold the lease
]]
local held = redis.call('GET', KEYS[1])
if not held or string.match(held, '^%d+') ~= ARGV[1] then
  return redis.error_reply('RS_REBUILD_LEASE_LOST the rebuild lease is no longer held by fencing token ' .. ARGV[1])
end
redis.call('HSET', KEYS[2], unpack(ARGV, 2))
return 'OK'
