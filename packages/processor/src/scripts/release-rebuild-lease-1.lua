#!lua
-- The shebang (no flags) makes Redis refuse the whole script before it runs when it cannot write
-- (OOM under maxmemory, READONLY, MISCONF), never between two of its writes.
--[[
Gives a rebuild's lease back, if the caller's fencing token still holds it: a holder whose lease
expired or was taken over must not delete the new holder's lease.

KEYS[1]  the lease: '<token> <holder JSON>'
ARGV[1]  the caller's fencing token
Reply    1 when the token held the lease (released), 0 when it did not (nothing done)
]]
local held = redis.call('GET', KEYS[1])
if not held or string.match(held, '^%d+') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
