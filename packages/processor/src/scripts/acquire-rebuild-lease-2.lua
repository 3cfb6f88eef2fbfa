#!lua
-- The shebang (no flags) makes Redis refuse the whole script before it runs when it cannot write
-- (OOM under maxmemory, READONLY, MISCONF), never between two of its writes.
--[[
Takes the lease of a projection's rebuild if nobody holds it (SET NX PX), with a fencing token one
higher than any given before: every write of the rebuild checks that its token still holds the
lease, so a holder that lost it (paused past it, cut off) writes nothing.

KEYS[1]  the lease: '<token> <holder JSON>', expiring after ARGV[1] ms unless renewed
KEYS[2]  the fencing counter: the last token given out (never reset, so tokens only grow); one
         hash tag with the lease (one Redis Cluster slot)
ARGV[1]  lease time, ms
ARGV[2]  the holder as JSON: {host, pid, startedAt}
Reply    {1, token} when taken; {0, the lease's value} when someone holds it
]]
local held = redis.call('GET', KEYS[1])
if held then return { 0, held } end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], token .. ' ' .. ARGV[2], 'NX', 'PX', ARGV[1])
return { 1, tostring(token) }
