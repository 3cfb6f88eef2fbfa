#!lua
-- The shebang (no flags) makes Redis refuse the whole script before it runs when it cannot write
-- (OOM under maxmemory, READONLY, MISCONF), never between two of its writes.
--[[
A processor that took a partition's lease claims the partition of one stream: it writes its fencing
token as the partition's epoch, which every apply of the partition checks in the same step as its
writes, so a former holder (paused past its lease, then resumed) can no longer apply anything. Then
it reads where the partition is applied up to, to go on from there. Both keys share the stream's slot.

KEYS[1]  the partition's epoch: the fencing token of its current holder
KEYS[2]  the partition's cursor: last applied entry id
ARGV[1]  the fencing token of the lease just taken
Reply    the cursor ('0-0' = nothing applied yet), or the error RS_PARTITION_LOST when a later holder
         has claimed the partition already (this lease is stale)
]]
local epoch = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if epoch > tonumber(ARGV[1]) then
  return redis.error_reply('RS_PARTITION_LOST a later holder (fencing token ' .. epoch .. ') has claimed the partition')
end
redis.call('SET', KEYS[1], ARGV[1])
return redis.call('GET', KEYS[2]) or '0-0'
