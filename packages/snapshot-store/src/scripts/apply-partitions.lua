#!lua
-- The shebang (no flags) makes Redis refuse the whole script before it runs when it cannot write
-- (OOM under maxmemory, READONLY, MISCONF), never between two of its writes.
--[[
apply-batch.lua in partition mode for several partitions of one stream at once: the batches one
read of the stream gave a processor, one per partition it holds. Each batch is checked and applied
on its own, as apply-batch.lua would (its fence, its cursor against its read start), so one
partition lost or moved fails that batch alone; one call instead of one per partition. Each batch is
finished (its snapshots' `_rev`, its cursor, the totals) before the next starts: a script error in a
later batch leaves the earlier ones whole (the caller then sends each batch again on its own).

KEYS[1]   the stream
KEYS[2]   the dead-letter stream
KEYS[3]   totals hash (as apply-batch.lua's KEYS[4])
KEYS[4]   the hold flag
KEYS[5]   set of the stream's dead-lettered entry ids
KEYS[6 .. 5 + 2n]  per batch, in order: its partition's cursor, its partition's epoch
KEYS[6 + 2n ..]    the snapshot hashes the batches touch (index 1 = KEYS[6 + 2n])
ARGV[1]   n, the number of batches
ARGV[2]   the entries of every batch as one JSON array, batch after batch, each laid out as in
          apply-batch.lua's ARGV[4]
ARGV[3]   the consumer group a dead letter names
ARGV[4]   the error code of a failed fence check
ARGV[5 ..] per batch, 5 each: its first entry's position in the array, its entry count, the
          fencing token, the read start, the last entry id read (apply-batch.lua's ARGV[5], [7], [8])
Reply     per batch, 7 each: applied, skipped, deadLettered, blockedAt (the first entry when held, else ''), cursor, held
          (1 = the hold flag stopped it), error ('' = none; else the error apply-batch.lua would
          have replied, and nothing of that batch was written)
]]

local A = cjson.decode(ARGV[2])

--@include entry-ids.lua
--@include snapshot-ops.lua

local letterGroup = ARGV[3]
local streamKey, deadLetterKey, deadLetteredKey = KEYS[1], KEYS[2], KEYS[5]
local batches = tonumber(ARGV[1])
local snapshotBase = 5 + 2 * batches
local function snapshotKey(index) return KEYS[snapshotBase + index] end

--@include apply-entries.lua

-- Every write below must succeed once started: check the bookkeeping keys' types first.
local wantedTypes = { [1] = 'stream', [2] = 'stream', [3] = 'hash', [5] = 'set' }
-- The epochs too: a GET of another type would fail after an earlier batch's writes.
for b = 1, batches do
  wantedTypes[4 + 2 * b] = 'string'
  wantedTypes[5 + 2 * b] = 'string'
end
local wrong = wrongKeyType(wantedTypes, 'apply-partitions')
if wrong then return wrong end

local held = redis.call('EXISTS', KEYS[4]) == 1
local reply = {}
for b = 1, batches do
  local at = 5 + (b - 1) * 5
  local pos, count, token, readFrom, readThrough =
    tonumber(ARGV[at]), tonumber(ARGV[at + 1]), ARGV[at + 2], ARGV[at + 3], ARGV[at + 4]
  local cursorKey, epochKey = KEYS[4 + 2 * b], KEYS[5 + 2 * b]
  local failure = fenceLost(epochKey, token, ARGV[4]) or ''
  local cursor = redis.call('GET', cursorKey) or '0-0'
  if failure == '' and held then
    -- A rebuild is switching the snapshots over: nothing may be applied until it releases the hold.
    -- As apply-batch.lua, it names the batch's first entry where it stopped.
    reply[#reply + 1] = 0; reply[#reply + 1] = 0; reply[#reply + 1] = 0
    reply[#reply + 1] = count > 0 and A[pos] or ''; reply[#reply + 1] = cursor; reply[#reply + 1] = 1; reply[#reply + 1] = ''
  else
    if failure == '' then
      local gap = partitionGap(cursor, readFrom)
      if gap then failure = gap.err end
    end
    if failure ~= '' then
      reply[#reply + 1] = 0; reply[#reply + 1] = 0; reply[#reply + 1] = 0
      reply[#reply + 1] = ''; reply[#reply + 1] = cursor; reply[#reply + 1] = 0; reply[#reply + 1] = failure
    else
      local a, s, d, _, applied = applyEntries(pos, count, cursor, true, true)
      -- The batch is finished before the next starts (revisions, cursor, totals), as a call of its
      -- own would: a script error in a later batch keeps what Redis ran, and this batch is whole.
      local newCursor = finishBatch(cursorKey, KEYS[3], a, s, d, applied, readThrough)
      reply[#reply + 1] = a; reply[#reply + 1] = s; reply[#reply + 1] = d
      reply[#reply + 1] = ''; reply[#reply + 1] = newCursor; reply[#reply + 1] = 0; reply[#reply + 1] = ''
    end
  end
end

return reply
