#!lua flags=no-writes
--[[
The first step of applying a batch on a Redis Cluster, where the snapshot hashes live in other
slots than the stream's bookkeeping: before any snapshot is written, checks in the stream's slot
what apply-batch.lua would refuse or skip, so the snapshot writes that follow apply only entries
that may be applied now. Reads only; apply-batch.lua checks it all again with its writes.

KEYS[1]  the stream the entries come from
KEYS[2]  the cursor: last applied entry id
KEYS[3]  the hold flag (a rebuild switching over)
KEYS[4]  the stream's dead-lettered entry ids
KEYS[5]  optional: the key that must hold the fencing token ARGV[3]
ARGV[1]  the entry ids, ascending, as a JSON array
ARGV[2]  '1' if they are consecutive entries of the stream
ARGV[3]  fencing token ('' = none)
ARGV[4]  error code of a failed fence check
ARGV[5]  a partition's read start ('' = not a partition; see apply-batch.lua ARGV[7]): no predecessor
         check, but the cursor must not be below it (RS_PARTITION_GAP)
Reply    {held (1/0), cursor, first entry blocked by an unapplied predecessor ('' = none), then the
          ids among the new ones already dead-lettered (never to be applied)}
]]
--@include entry-ids.lua

local fence = ARGV[3] or ''
if fence ~= '' then
  local holder = redis.call('GET', KEYS[5])
  if not holder or string.match(holder, '^%d+') ~= fence then
    return redis.error_reply(ARGV[4] .. ' the lease is no longer held by fencing token ' .. fence)
  end
end
local cursor = redis.call('GET', KEYS[2]) or '0-0'
if redis.call('EXISTS', KEYS[3]) == 1 then return { 1, cursor, '' } end
local readFrom = ARGV[5] or ''
local partitioned = readFrom ~= ''
local gap = partitionGap(cursor, readFrom)
if gap then return gap end

local ids = cjson.decode(ARGV[1])
local fresh = {}
local blockedAt = ''
local previous = cursor
-- The ids ascend: once one is past the cursor, so is every later one (no id parsing then).
local allNew = false
for _, id in ipairs(ids) do
  allNew = allNew or compareIds(id, cursor) > 0
  if allNew then
    if not partitioned and (#fresh == 0 or ARGV[2] ~= '1') then
      if #redis.call('XRANGE', KEYS[1], '(' .. previous, '(' .. id, 'COUNT', 1) > 0 then
        blockedAt = id
        break
      end
    end
    fresh[#fresh + 1] = id
    previous = id
  end
end

local reply = { 0, cursor, blockedAt }
if #fresh > 0 and redis.call('SCARD', KEYS[4]) > 0 then
  for i = 1, #fresh, 1000 do
    local chunk = { unpack(fresh, i, math.min(i + 999, #fresh)) }
    local found = redis.call('SMISMEMBER', KEYS[4], unpack(chunk))
    for j, member in ipairs(found) do
      if member == 1 then reply[#reply + 1] = chunk[j] end
    end
  end
end
return reply
