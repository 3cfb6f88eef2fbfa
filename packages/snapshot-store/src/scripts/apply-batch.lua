#!lua
-- The shebang (no flags) makes Redis refuse the whole script before it runs when it cannot write
-- (OOM under maxmemory, READONLY, MISCONF), never between two of its writes.
--[[
Applies a batch of stream entries to snapshot hashes exactly once and in stream order, records
how far the stream has been applied, dead-letters the entries that cannot be applied, and acks
them in the consumer group: all in one atomic step, so a crash can never separate the effect
from its record.

An entry is applied only when every earlier entry of the stream has been applied: the cursor
(last applied id) must be the entry's predecessor in the stream. An entry at or below the cursor
was applied before (redelivery) and is skipped. An entry with an unapplied predecessor stops the
batch (another consumer holds the predecessor); the caller retries the rest later.

KEYS[1]   the stream
KEYS[2]   the cursor: last applied entry id of the stream for this projection
KEYS[3]   the dead-letter stream
KEYS[4]   totals hash: applied / skipped / deadLettered entries of the stream, over all processes
KEYS[5]   the hold flag: while it exists (a rebuild is switching snapshots over), nothing is applied
KEYS[6]   set of the stream's dead-lettered entry ids, shared by every projection of it (a
          rebuild's shadow included): an entry is dead-lettered once, whoever meets it again, and
          one in the set is never applied; retention removes the ids it trims from the stream
KEYS[7..] the snapshot hashes the batch touches; with a fence (ARGV[5]), the last key is its lease
ARGV[1]   consumer group to XACK in ('' = no ack, as in a replay)
ARGV[2]   entry count
ARGV[3]   '1' if the entries are consecutive entries of the stream (as XREADGROUP > hands them out):
          then only the first new entry needs the predecessor check; '0' checks every new entry
ARGV[4]   the entries as one JSON array; in it, for each entry, in ascending id order:
          entry id, kind
          kind 'A' (apply): change count, then per change: snapshot key index (1 = KEYS[7]), op count, ops
          kind 'D' (dead-letter): reason, the fields as the caller decoded them, as JSON (the dead
          letter also gets the entry's exact bytes from the stream: field 'original', netstrings)
Ops       see includes/snapshot-ops.lua
ARGV[5]   optional fencing token ('' or absent = no fence): unless the last key (a rebuild's lease
          '<token> <holder>', or a partition's epoch '<token>') holds this token, the script writes
          nothing and fails with ARGV[6], so a holder that lost its lease cannot write
ARGV[6]   the error code of a failed fence check (default RS_REBUILD_LEASE_LOST)
ARGV[7]   a partition's read start ('' = not a partition): the entries are this partition's entries of
          KEYS[1] after ARGV[7] up to ARGV[8], as its holder read them from the stream (entries of
          other partitions left out). No predecessor check: the cursor (all of the partition's entries
          up to it are applied) must not be below ARGV[7], or entries would be skipped: the script
          then fails RS_PARTITION_GAP, writing nothing. Entries at or below the cursor were applied
          before (a retry) and are skipped; afterwards the cursor is at least ARGV[8].
ARGV[8]   with ARGV[7]: the last entry id of the stream the holder read (the partition has no other
          entries up to it): the cursor moves there even when the batch is empty
ARGV[9]   the consumer group a dead letter names (default ARGV[1])
Reply     {applied, skipped, deadLettered, blockedAt ('' = none), cursor, held (1 = the hold flag stopped it)}
]]

-- The entries, packed by the caller into one JSON array (ARGV[4]): one argument instead of thousands.
local A = cjson.decode(ARGV[4])

--@include entry-ids.lua
--@include snapshot-ops.lua

local group = ARGV[1]
local letterGroup = ARGV[9] or ''
if letterGroup == '' then letterGroup = group end
local streamKey, deadLetterKey, deadLetteredKey = KEYS[1], KEYS[3], KEYS[6]
local function snapshotKey(index) return KEYS[6 + index] end
local readFrom = ARGV[7] or ''
local partitioned = readFrom ~= ''

--@include apply-entries.lua

-- A rebuild that lost its lease (paused or cut off past it, taken over) must not write: checked first.
local fence = ARGV[5] or ''
if fence ~= '' then
  local code = ARGV[6] or ''
  if code == '' then code = 'RS_REBUILD_LEASE_LOST' end
  local lost = fenceLost(KEYS[#KEYS], fence, code)
  if lost then return redis.error_reply(lost) end
end

-- Every write below must succeed once started: check the bookkeeping keys' types first.
local wrong = wrongKeyType({ [1] = 'stream', [2] = 'string', [3] = 'stream', [4] = 'hash', [6] = 'set' }, 'apply-batch')
if wrong then return wrong end
local count = tonumber(ARGV[2])
local cursor = redis.call('GET', KEYS[2]) or '0-0'
-- A rebuild is switching the snapshots over: nothing may be applied until it releases the hold.
if redis.call('EXISTS', KEYS[5]) == 1 then return { 0, 0, 0, A[1] or '', cursor, 1 } end
local gap = partitionGap(cursor, readFrom)
if gap then return gap end
local applied, skipped, deadLettered, blockedAt, acked
applied, skipped, deadLettered, blockedAt, cursor, acked = applyEntries(1, count, cursor, ARGV[3] == '1', partitioned)

cursor = finishBatch(KEYS[2], KEYS[4], applied, skipped, deadLettered, cursor, partitioned and ARGV[8] or '')
if group ~= '' and #acked > 0 then
  for i = 1, #acked, 1000 do
    redis.call('XACK', KEYS[1], group, unpack(acked, i, math.min(i + 999, #acked)))
  end
end
return { applied, skipped, deadLettered, blockedAt, cursor, 0 }
