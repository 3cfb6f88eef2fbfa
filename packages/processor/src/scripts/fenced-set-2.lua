#!lua
-- The shebang (no flags) makes Redis refuse the whole script before it runs when it cannot write
-- (OOM under maxmemory, READONLY, MISCONF), never between two of its writes.
--[[
SET or DEL of one key by a rebuild, only while its fencing token holds the lease: the hold flag,
the live and shadow cursors, the shadow totals, the rebuild state at the end.

KEYS[1]  the key holding the token, in KEYS[2]'s slot: the rebuild lease '<token> <holder JSON>'
         (one Redis; the state on a cluster), or on a Redis Cluster the rebuild epoch '<token>' in
         the stream's slot for the stream's keys (the lease is in another slot; take-rebuild-epoch-1.lua)
KEYS[2]  the key to write
ARGV[1]  the rebuild's fencing token
ARGV[2]  the value to SET, or '' to DEL the key
Reply    'OK', or the error RS_REBUILD_LEASE_LOST (nothing written) when the token does not hold the lease
]]
local held = redis.call('GET', KEYS[1])
if not held or string.match(held, '^%d+') ~= ARGV[1] then
  return redis.error_reply('RS_REBUILD_LEASE_LOST the rebuild lease is no longer held by fencing token ' .. ARGV[1])
end
if ARGV[2] == '' then redis.call('DEL', KEYS[2]) else redis.call('SET', KEYS[2], ARGV[2]) end
return 'OK'
