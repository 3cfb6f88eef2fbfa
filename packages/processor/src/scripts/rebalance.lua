#!lua
-- The shebang (no flags) makes Redis refuse the whole script before it runs when it cannot write
-- (OOM under maxmemory, READONLY, MISCONF), never between two of its writes.
--[[
One ownership round of a processor in its group: says it is alive, renews the partition leases it
holds, takes free partitions up to its fair share and tells which it holds beyond that share (the
caller finishes their batches, then releases them). Every key shares the group's slot.

Fair share: with M live members sorted by name, each holds floor(P / M) partitions and the first
P mod M one more. Only free partitions are taken (never expired-and-renewed ones): a partition
moves only when its holder releases it or its lease runs out, so the others never pause.

KEYS[1]            members: sorted set, member = processor name, score = expiry (ms)
KEYS[2..P+1]       the leases, partition 0 first: '<fencing token> <holder>', expiring
KEYS[P+2..2P+1]    the fencing counters: only grow, so a later holder always has a higher token
ARGV[1]            this processor's name
ARGV[2]            lease (and membership) time to live, ms
ARGV[3]            partition count P
ARGV[4]            '1' to take nothing new (stopping)
Reply              {share, members, then per partition held: partition, token}
]]
local me, ttl, count = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)

redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if ARGV[4] ~= '1' then redis.call('ZADD', KEYS[1], now + ttl, me) end
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
table.sort(members)
local rank = 0
for i, name in ipairs(members) do
  if name == me then rank = i end
end
local share = 0
if rank > 0 then
  share = math.floor(count / #members)
  if rank <= count % #members then share = share + 1 end
end

local held, free = {}, {}
for p = 0, count - 1 do
  local lease = redis.call('GET', KEYS[2 + p])
  if lease then
    local token, holder = string.match(lease, '^(%d+) (.*)$')
    if holder == me then
      redis.call('PEXPIRE', KEYS[2 + p], ttl)
      held[#held + 1] = p
      held[#held + 1] = token
    end
  else
    free[#free + 1] = p
  end
end

-- Free partitions are taken starting from this member's place, so members joining together do not
-- all reach for the same ones.
if rank > 0 and #free > 0 then
  local start = ((rank - 1) * math.floor(count / #members)) % count
  table.sort(free, function(a, b) return (a - start) % count < (b - start) % count end)
  local i = 1
  while #held / 2 < share and i <= #free do
    local p = free[i]
    local token = redis.call('INCR', KEYS[2 + count + p])
    redis.call('SET', KEYS[2 + p], token .. ' ' .. me, 'PX', ttl)
    held[#held + 1] = p
    held[#held + 1] = tostring(token)
    i = i + 1
  end
end

local reply = { share, #members }
for i = 1, #held do reply[#reply + 1] = held[i] end
return reply
