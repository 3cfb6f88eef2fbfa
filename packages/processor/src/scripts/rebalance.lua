#!lua
-- The shebang (no flags) makes Redis refuse the whole script before it runs when it cannot write
-- (OOM under maxmemory, READONLY, MISCONF), never between two of its writes.
--[[
One ownership round of a processor in its group: says it is alive, renews the leases it holds,
takes free ones up to its fair share and tells which it holds beyond that share (the caller
finishes their batches, then releases them). Every key shares the group's slot.

The unit of ownership is one partition of one stream: U = S streams x P partitions, numbered
stream by stream (unit u is partition u % P of stream floor(u / P)). A processor reads a stream only
for the units of it it holds, and shares are cut in that order, so N processors on S streams read
about S + N - 1 streams between them instead of N x S.

Fair share: with M live members sorted by name, each holds floor(U / M) units and the first U mod M
one more. Only free units are taken (never expired-and-renewed ones): a unit moves only when its
holder releases it or its lease runs out, so the others never pause.

KEYS[1]            members: sorted set, member = processor name, score = expiry (ms)
KEYS[2..U+1]       the leases, unit 0 first: '<fencing token> <holder>', expiring
KEYS[U+2..U+P+1]   the fencing counters, partition 0 first (shared by the streams): only grow, so a
                   later holder of a unit always has a higher token
KEYS[U+P+2..U+2P+1] the leases of redsource 0.2, one per partition of every stream: while a processor
                   of that version holds one, this one takes nothing (both would claim the same
                   partitions in turn, each claim fencing the other out)
ARGV[1]            this processor's name
ARGV[2]            lease (and membership) time to live, ms
ARGV[3]            partition count P
ARGV[4]            '1' to take nothing new (stopping)
Reply              {share, members, older (how many 0.2 leases are held), then per unit held: unit, token}
]]
local me, ttl, partitions = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local count = #KEYS - 1 - 2 * partitions
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
if rank > 0 and count > 0 then
  share = math.floor(count / #members)
  if rank <= count % #members then share = share + 1 end
end

local held, free = {}, {}
for u = 0, count - 1 do
  local lease = redis.call('GET', KEYS[2 + u])
  if lease then
    local token, holder = string.match(lease, '^(%d+) (.*)$')
    if holder == me then
      redis.call('PEXPIRE', KEYS[2 + u], ttl)
      held[#held + 1] = u
      held[#held + 1] = token
    end
  else
    free[#free + 1] = u
  end
end

local older = 0
for p = 0, partitions - 1 do
  if redis.call('EXISTS', KEYS[2 + count + partitions + p]) == 1 then older = older + 1 end
end

-- Free units are taken starting from this member's place, so members joining together do not all
-- reach for the same ones, and each member's units are consecutive: few streams per member.
if rank > 0 and #free > 0 and older == 0 then
  local start = ((rank - 1) * math.floor(count / #members)) % count
  table.sort(free, function(a, b) return (a - start) % count < (b - start) % count end)
  local i = 1
  while #held / 2 < share and i <= #free do
    local u = free[i]
    local token = redis.call('INCR', KEYS[2 + count + u % partitions])
    redis.call('SET', KEYS[2 + u], token .. ' ' .. me, 'PX', ttl)
    held[#held + 1] = u
    held[#held + 1] = tostring(token)
    i = i + 1
  end
end

local reply = { share, #members, older }
for i = 1, #held do reply[#reply + 1] = held[i] end
return reply
