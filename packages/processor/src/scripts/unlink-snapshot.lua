#!lua
-- The shebang (no flags) makes Redis refuse the whole script before it runs when it cannot write
-- (OOM under maxmemory, READONLY, MISCONF), never between two of its writes.
--[[
Deletes one snapshot hash for a rebuild, only while its fencing token holds the lease: a live
snapshot the rebuild did not switch over (its fold has no such snapshot), or a hash of an abandoned
shadow. The mark is read in the same step, so a snapshot switched meanwhile is never deleted.

KEYS[1]  the rebuild lease: '<token> <holder JSON>'
KEYS[2]  the snapshot hash
ARGV[1]  the rebuild's fencing token
ARGV[2]  a rebuild id: a hash whose `_rebuild` field holds it is kept ('' = delete whatever it holds)
Reply    1 deleted, 0 kept or absent; or the error RS_REBUILD_LEASE_LOST
]]
local held = redis.call('GET', KEYS[1])
if not held or string.match(held, '^%d+') ~= ARGV[1] then
  return redis.error_reply('RS_REBUILD_LEASE_LOST the rebuild lease is no longer held by fencing token ' .. ARGV[1])
end
if ARGV[2] ~= '' and redis.call('HGET', KEYS[2], '_rebuild') == ARGV[2] then return 0 end
return redis.call('UNLINK', KEYS[2])
