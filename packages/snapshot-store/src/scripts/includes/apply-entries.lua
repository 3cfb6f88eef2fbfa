-- The per-entry part of an apply: entries of one stream, laid out in A (decoded before this is
-- included; see apply-batch.lua for the layout), applied in order past a cursor; and the checks
-- before it and the records after it. Shared by apply-batch.lua (one batch) and apply-partitions.lua
-- (a batch per partition of one read).
-- Defined before this is included: streamKey (the stream), deadLetterKey (its dead-letter stream),
-- deadLetteredKey (the set of its dead-lettered entry ids), letterGroup (the group a dead letter
-- names) and snapshotKey(index) (a snapshot hash by its index in A).

-- The set is read only when it has members (SCARD is O(1)); retention trims it with the stream.
local anyDeadLettered
local function wasDeadLettered(entryId)
  if anyDeadLettered == nil then anyDeadLettered = redis.call('SCARD', deadLetteredKey) > 0 end
  return anyDeadLettered and redis.call('SISMEMBER', deadLetteredKey, entryId) == 1
end

local function deadLetter(entryId, reason, fieldsJson)
  if redis.call('SADD', deadLetteredKey, entryId) == 0 then return end
  local now = redis.call('TIME')
  local letter = { 'stream', streamKey, 'entry_id', entryId, 'reason', reason,
    'fields', fieldsJson, 'group', letterGroup, 'dead_at', now[1] .. string.sub('000' .. math.floor(now[2] / 1000), -3) }
  -- The entry's exact bytes, copied from the stream in this same step: the caller's text may have
  -- lost some (bytes that are not UTF-8 decode to U+FFFD). As netstrings, '<length>:<bytes>,' per item.
  local found = redis.call('XRANGE', streamKey, entryId, entryId)[1]
  if found then
    local original = {}
    for i, item in ipairs(found[2]) do original[i] = #item .. ':' .. item .. ',' end
    letter[#letter + 1] = 'original'
    letter[#letter + 1] = table.concat(original)
  end
  redis.call('XADD', deadLetterKey, '*', unpack(letter))
end

-- An entry whose write Redis refused with another error than WRONGTYPE (a counter past 2^63, see
-- tryChange): raising it would leave the batch's earlier entries written but not their cursor, and
-- every retry would apply them again. It is dead-lettered instead.
local function failedEntry(entryId, failure)
  deadLetter(entryId, 'RS_APPLY_FAILED: ' .. failure, '[]')
end

-- Applies `count` entries from A[pos] on past `cursor`. `contiguous`: consecutive entries of the
-- stream (only the first new one needs the predecessor check); `partitioned`: one partition's
-- entries (no predecessor check: the caller checked the cursor against the read start).
-- Returns applied, skipped, deadLettered, blockedAt ('' = none), the new cursor, the ids handled.
local function applyEntries(pos, count, cursor, contiguous, partitioned)
  local applied, skipped, deadLettered = 0, 0, 0
  local blockedAt = ''
  local handled = {}
  local predecessorChecked = false
  local allNew = false
  for _ = 1, count do
    local entryId, kind = A[pos], A[pos + 1]
    pos = pos + 2
    opSeq = 0
    -- The entries ascend: once one is past the cursor, so is every later one (no id parsing then).
    local isNew = allNew or compareIds(entryId, cursor) > 0
    allNew = isNew
    if isNew and not partitioned and not (contiguous and predecessorChecked) then
      if #redis.call('XRANGE', streamKey, '(' .. cursor, '(' .. entryId, 'COUNT', 1) > 0 then
        blockedAt = entryId
        break
      end
      predecessorChecked = true
    end
    if kind == 'A' then
      local changeCount = tonumber(A[pos])
      pos = pos + 1
      local changes = {}
      local wrongKey
      for i = 1, changeCount do
        local key, opCount = snapshotKey(tonumber(A[pos])), tonumber(A[pos + 1])
        changes[i] = { key = key, opCount = opCount, pos = pos + 2 }
        pos = skipOps(pos + 2, opCount)
        -- Several changes: check every key's type before any write (a script error would leave half an entry).
        if isNew and changeCount > 1 and not isHashOrNone(key) then wrongKey = key end
      end
      if isNew and wasDeadLettered(entryId) then
        -- Dead-lettered before by another projection of the stream (the live one, or a rebuild's
        -- shadow): it stays dead-lettered, never applied as well, and is not dead-lettered again.
        deadLettered = deadLettered + 1
      elseif isNew and changeCount == 1 and not surelyExists[changes[1].key] then
        -- One change (the usual case): its first op is a hash command on its key, so a key of another
        -- type fails before anything is written. Catching that costs less than a TYPE per entry.
        local change = changes[1]
        local failure, wrote = tryChange(change.key, change.opCount, change.pos, entryId)
        if not failure then
          applied = applied + 1
        elseif not wrote and string.find(failure, 'WRONGTYPE', 1, true) then
          revisions[change.key] = nil
          deadLetter(entryId, 'RS_SNAPSHOT_KEY_WRONGTYPE: ' .. change.key .. ' is a ' .. keyType(change.key) .. ', not a hash', '[]')
          deadLettered = deadLettered + 1
        else
          failedEntry(entryId, failure)
          deadLettered = deadLettered + 1
        end
      elseif isNew and wrongKey then
        deadLetter(entryId, 'RS_SNAPSHOT_KEY_WRONGTYPE: ' .. wrongKey .. ' is a ' .. keyType(wrongKey) .. ', not a hash', '[]')
        deadLettered = deadLettered + 1
      elseif isNew then
        local failed = false
        for _, change in ipairs(changes) do
          local failure = tryChange(change.key, change.opCount, change.pos, entryId)
          if failure then
            failedEntry(entryId, failure)
            failed = true
            break
          end
        end
        if failed then deadLettered = deadLettered + 1 else applied = applied + 1 end
      end
    else
      if isNew then
        deadLetter(entryId, A[pos], A[pos + 1])
        deadLettered = deadLettered + 1
      end
      pos = pos + 2
    end
    if isNew then cursor = entryId else skipped = skipped + 1 end
    handled[#handled + 1] = entryId
  end
  return applied, skipped, deadLettered, blockedAt, cursor, handled
end

-- The error reply when a key of `wanted` (KEYS index -> type) holds another type, else nil.
local function wrongKeyType(wanted, script)
  for i, want in pairs(wanted) do
    local t = keyType(KEYS[i])
    if t ~= 'none' and t ~= want then
      return redis.error_reply('redsource ' .. script .. ': ' .. KEYS[i] .. ' is a ' .. t .. ', expected a ' .. want)
    end
  end
end

-- Why a holder of fencing `token` may not write (the lease or epoch at `key` holds another), else nil.
local function fenceLost(key, token, code)
  local held = redis.call('GET', key)
  if held and string.match(held, '^%d+') == token then return nil end
  return code .. ' the lease is no longer held by fencing token ' .. token
end

-- Records a batch applied past its start: its snapshots' `_rev`, the cursor (moved on to `readThrough`,
-- a partition's last id read, when that is further) and the totals. Returns the cursor.
local function finishBatch(cursorKey, totalsKey, applied, skipped, deadLettered, cursor, readThrough)
  finishRevisions()
  revisions = {}
  local moved = applied + deadLettered > 0
  if readThrough ~= '' and compareIds(readThrough, cursor) > 0 then
    cursor = readThrough
    moved = true
  end
  if moved then redis.call('SET', cursorKey, cursor) end
  if applied > 0 then redis.call('HINCRBY', totalsKey, 'applied', applied) end
  if skipped > 0 then redis.call('HINCRBY', totalsKey, 'skipped', skipped) end
  if deadLettered > 0 then redis.call('HINCRBY', totalsKey, 'deadLettered', deadLettered) end
  return cursor
end
