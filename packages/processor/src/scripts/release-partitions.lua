#!lua
-- The shebang (no flags) makes Redis refuse the whole script before it runs when it cannot write
-- (OOM under maxmemory, READONLY, MISCONF), never between two of its writes.
--[[
Gives partitions back: each lease is deleted only while it still holds this processor's token (a
lease that ran out and was taken by another stays theirs). Leaving also removes the processor from
the members, so the others' next round shares its partitions out. Every key shares the group's slot.

KEYS[1]     members (see rebalance.lua)
KEYS[2..]   the leases to release
ARGV[1]     this processor's name
ARGV[2]     '1' to leave the group as well
ARGV[3..]   the fencing token held on each lease, in KEYS order
Reply       how many leases were released
]]
local released = 0
for i = 2, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[i + 1] .. ' ' .. ARGV[1] then
    redis.call('DEL', KEYS[i])
    released = released + 1
  end
end
if ARGV[2] == '1' then redis.call('ZREM', KEYS[1], ARGV[1]) end
return released
