#!lua
-- The shebang (no flags) makes Redis refuse the whole script before it runs when it cannot write
-- (OOM under maxmemory, READONLY, MISCONF), never between two of its writes.
--[[
On a Redis Cluster, a rebuild that has just taken its lease (in another slot) copies its fencing
token into the epoch key in each stream's slot before it writes anything there: the rebuild's
fenced writes to the stream's keys check the epoch instead of the lease. Refused when a later
holder's (higher) token is there already, so a holder paused between taking the lease and this
copy cannot take the stream back from its successor.

KEYS[1]  the epoch: '<token>' of the last rebuild (of these snapshots) that took the stream
ARGV[1]  the rebuild's fencing token
Reply    'OK', or the error RS_REBUILD_LEASE_LOST (nothing written) when a higher token is there
]]
local held = redis.call('GET', KEYS[1])
local by = held and tonumber(string.match(held, '^%d+'))
if by and by > tonumber(ARGV[1]) then
  return redis.error_reply('RS_REBUILD_LEASE_LOST ' .. KEYS[1] .. ' holds fencing token ' .. by .. ', later than ' .. ARGV[1])
end
redis.call('SET', KEYS[1], ARGV[1])
return 'OK'
