-- Stream entry ids compared as numbers ('<ms>-<seq>', each part any length).
local function compareNumbers(a, b)
  if #a ~= #b then return #a < #b and -1 or 1 end
  if a == b then return 0 end
  return a < b and -1 or 1
end

local function compareIds(a, b)
  local aMs, aSeq = string.match(a, '^(%d+)-(%d+)$')
  local bMs, bSeq = string.match(b, '^(%d+)-(%d+)$')
  local byMs = compareNumbers(aMs, bMs)
  if byMs ~= 0 then return byMs end
  return compareNumbers(aSeq, bSeq)
end

-- A partition's batch read from `readFrom` on while its cursor is behind it would skip entries:
-- the error reply to refuse it with (nothing written), or nil when the batch may go on.
local function partitionGap(cursor, readFrom)
  if readFrom == '' or compareIds(cursor, readFrom) >= 0 then return nil end
  return redis.error_reply('RS_PARTITION_GAP the partition is applied up to ' .. cursor .. ', not ' .. readFrom .. ': read it again from there')
end
