#!lua flags=allow-cross-slot-keys
-- The shebang (without no-writes or allow-oom) makes Redis refuse the whole script before it runs
-- when it cannot write (OOM under maxmemory, READONLY, MISCONF), never between two of its writes.
-- allow-cross-slot-keys: one call may write the snapshots of every slot a node serves (ARGV[7]).
--[[
The snapshot writes of a batch on a Redis Cluster, for the snapshots of one slot (apply-batch.lua
then records the batch in the stream's slot). Each snapshot remembers, in a marker field, the last
entry of this stream (or partition) applied to it and the fencing token that applied it, so:
- an entry at or below a snapshot's marker is not applied again (a batch retried after a crash
  between this step and apply-batch.lua, or applied by a former holder of the partition);
- a holder whose token is lower than a snapshot's marker (it was paused past its lease and another
  holder has written here since) writes nothing: the script fails with ARGV[5].

KEYS[1..]  the snapshot hashes, all in one slot; or only the first of ARGV[7]'s (it routes the call)
ARGV[1]    the marker field, e.g. '_at:user_updates:p3'
ARGV[2]    the fencing token ('0' = none)
ARGV[3]    entry count
ARGV[4]    JSON array: per entry, ascending: entry id, change count, then per change: key index
           (1 = KEYS[1]), op count, ops (see includes/snapshot-ops.lua)
ARGV[5]    error code of a failed fence check
ARGV[6]    optional: another marker field whose entry id also counts as applied (not its token): a
           partition's apply passes the stream's own marker, '_at:<stream>', which a rebuild writes
           into the hashes it folds. A live apply that checked for a rebuild's hold, then was delayed
           past the rebuild's switch, so finds a rebuilt hash, skips what the rebuild folded into it.
ARGV[7]    optional: the snapshot hashes as a JSON array, in several slots of this node (KEYS[1] is one
           of them). Every key is read before any write, so a key this node does not serve (a slot
           moved) fails the script before it has written anything; the caller then goes slot by slot.
ARGV[8]    optional: the cursor the batch was checked against (its entries are past it). A snapshot
           remembers the entries whose write Redis refused here, above that cursor, in a field named
           after the marker ('_refused:<stream>[:p<n>]', a JSON object entry id -> error): if the
           bookkeeping step after this one fails, a retry finds them past the marker, and reports them
           again instead of counting them applied. Those at or below the cursor are booked: dropped
           by the next call that writes that snapshot (a field left in a rebuilt hash is never read:
           live applies name theirs after the partition).
Reply      {applied changes, then per entry to dead-letter: kind, entry id, key, detail}; kind 'W': the key
           is not a hash (detail: its type), nothing of the entry written here; kind 'F': Redis refused one of
           its writes (a counter past 2^63; detail: the error), what the entry wrote before stays, as
           tryChange (includes/snapshot-ops.lua) counts it, and its later changes here are not applied
]]
local A = cjson.decode(ARGV[4])
local K = KEYS
if (ARGV[7] or '') ~= '' then K = cjson.decode(ARGV[7]) end
local marker, token = ARGV[1], tonumber(ARGV[2])

--@include entry-ids.lua
--@include snapshot-ops.lua

-- Every check before any write.
local appliedUpTo = {}
local rebuiltUpTo = {}
local refusedField = '_refused' .. string.sub(marker, 4)
local cursor = ARGV[8] or ''
-- key -> { entry id -> error }: refusals of earlier calls not yet booked (above the cursor).
local refusedBefore = {}
local rebuildMarker = ARGV[6] or ''
for _, key in ipairs(K) do
  -- One read of a hash's three fields: its marker, the refusals it remembers, the rebuild's marker.
  local found, remembered, folded
  if redis.call('TYPE', key).ok == 'hash' then
    local got = redis.call('HMGET', key, marker, refusedField, rebuildMarker ~= '' and rebuildMarker or marker)
    found, remembered = got[1], got[2]
    folded = rebuildMarker ~= '' and got[3]
  end
  if remembered then
    local ok, byId = pcall(cjson.decode, remembered)
    if ok and type(byId) == 'table' then refusedBefore[key] = byId end
  end
  if found then
    local by, id = string.match(found, '^(%d+) (.+)$')
    if tonumber(by) > token then
      return redis.error_reply(ARGV[5] .. ' ' .. key .. ' was written since by fencing token ' .. by .. ', not ' .. ARGV[2])
    end
    appliedUpTo[key] = id
  end
  if folded then
    local id = string.match(folded, '^%d+ (.+)$')
    if id and (not appliedUpTo[key] or compareIds(id, appliedUpTo[key]) > 0) then rebuiltUpTo[key] = id end
  end
end

local applied = 0
-- The entries for the bookkeeping step to dead-letter, four items each (see Reply).
local refused = {}
local function refuse(kind, entryId, key, detail)
  local n = #refused
  refused[n + 1], refused[n + 2], refused[n + 3], refused[n + 4] = kind, entryId, key, detail
end
local lastFor = {}
local pos = 1
for _ = 1, tonumber(ARGV[3]) do
  local entryId, changeCount = A[pos], tonumber(A[pos + 1])
  pos = pos + 2
  opSeq = 0
  local changes = {}
  local wrong
  for i = 1, changeCount do
    local key, opCount = K[tonumber(A[pos])], tonumber(A[pos + 1])
    changes[i] = { key = key, opCount = opCount, pos = pos + 2 }
    pos = skipOps(pos + 2, opCount)
    if not isHashOrNone(key) then wrong = key end
  end
  if wrong then
    refuse('W', entryId, wrong, keyType(wrong))
  else
    local failed = false
    for _, change in ipairs(changes) do
      local upTo = rebuiltUpTo[change.key] or appliedUpTo[change.key]
      local refusedEarlier = refusedBefore[change.key] and refusedBefore[change.key][entryId]
      if refusedEarlier and not failed then
        -- Refused here by an earlier call whose bookkeeping did not happen: refused again, not applied.
        refuse('F', entryId, change.key, refusedEarlier)
        failed = true
      elseif not failed and (not upTo or compareIds(entryId, upTo) > 0) then
        local failure = tryChange(change.key, change.opCount, change.pos, entryId)
        if not failure then
          applied = applied + 1
        else
          refuse('F', entryId, change.key, failure)
          refusedBefore[change.key] = refusedBefore[change.key] or {}
          refusedBefore[change.key][entryId] = failure
          failed = true
        end
      end
      -- Past the marker either way: a retry does not write again what a dead-lettered entry wrote.
      if not lastFor[change.key] or compareIds(entryId, lastFor[change.key]) > 0 then lastFor[change.key] = entryId end
    end
  end
end
finishRevisions()
-- The refusals each snapshot remembers: those not yet booked (above the cursor), this call's included.
for key, byId in pairs(refusedBefore) do
  local kept, any = {}, false
  for id, failure in pairs(byId) do
    if cursor == '' or compareIds(id, cursor) > 0 then
      kept[id] = failure
      any = true
    end
  end
  if any then redis.call('HSET', key, refusedField, cjson.encode(kept)) else redis.call('HDEL', key, refusedField) end
end
for key, last in pairs(lastFor) do
  local upTo = appliedUpTo[key]
  if upTo and compareIds(upTo, last) > 0 then last = upTo end
  redis.call('HSET', key, marker, ARGV[2] .. ' ' .. last)
end
local reply = { applied }
for _, item in ipairs(refused) do reply[#reply + 1] = item end
return reply
