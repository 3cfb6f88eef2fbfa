#!lua
-- The shebang (no flags) makes Redis refuse the whole script before it runs when it cannot write
-- (OOM under maxmemory, READONLY, MISCONF), never between two of its writes.
--[[
Extends the lease of a rebuild if the caller's fencing token still holds it. A holder whose lease
expired or was taken over must not get it back: it has lost the rebuild.

KEYS[1]  the lease: '<token> <holder JSON>'
ARGV[1]  the caller's fencing token
ARGV[2]  new lease time in ms (> 0)
Reply    1 when the token held the lease (renewed), 0 when it did not (nothing done)
]]
local held = redis.call('GET', KEYS[1])
if not held or string.match(held, '^%d+') ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
