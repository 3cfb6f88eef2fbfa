-- Snapshot hash writes: the ops of a change, as the caller encodes them in the array A (decoded
-- from JSON before this is included). Layout: `_exists`, `_rev`, `_inc`, `f:<field>` JSON, `s:<set>:<member>`
-- = '<entry id>/<op index>' (orders the set), `c:<counter>`.
-- Ops: 'X' create | 'R' remove | 'C' clear fields | 'F' name json | 'U' name | 'A' set member
--      | 'M' set member | 'I' counter by

local function clearFields(key)
  local names = redis.call('HKEYS', key)
  local doomed = {}
  for _, name in ipairs(names) do
    if string.sub(name, 1, 2) == 'f:' then doomed[#doomed + 1] = name end
  end
  for i = 1, #doomed, 500 do
    redis.call('HDEL', key, unpack(doomed, i, math.min(i + 499, #doomed)))
  end
end

-- Counts the ops of the entry being applied, across its changes: orders members added by one entry.
-- The caller resets it to 0 before each entry.
local opSeq = 0
-- Changes per snapshot: `_rev` grows by that much once per key, at the end (finishRevisions).
local revisions = {}
-- Snapshots an op wrote a field to (so no EXISTS is needed for them at the end).
local surelyExists = {}
-- Ops carried out so far: tells whether a failing change had written anything yet.
local writes = 0

-- Applies the ops of one change starting at A[pos]; returns the position after them.
local function applyChange(key, opCount, pos, entryId)
  for _ = 1, opCount do
    opSeq = opSeq + 1
    local op = A[pos]
    if op == 'X' then
      redis.call('HSET', key, '_exists', '1')
      pos = pos + 1
    elseif op == 'R' then
      clearFields(key)
      redis.call('HDEL', key, '_exists')
      pos = pos + 1
    elseif op == 'C' then
      clearFields(key)
      pos = pos + 1
    elseif op == 'F' then
      redis.call('HSET', key, 'f:' .. A[pos + 1], A[pos + 2])
      pos = pos + 3
    elseif op == 'U' then
      redis.call('HDEL', key, 'f:' .. A[pos + 1])
      pos = pos + 2
    elseif op == 'A' then
      -- The value orders the set: the adding entry's id, then the op's place within the entry.
      redis.call('HSETNX', key, 's:' .. A[pos + 1] .. ':' .. A[pos + 2], entryId .. '/' .. opSeq)
      pos = pos + 3
    elseif op == 'M' then
      redis.call('HDEL', key, 's:' .. A[pos + 1] .. ':' .. A[pos + 2])
      pos = pos + 3
    elseif op == 'I' then
      redis.call('HINCRBY', key, 'c:' .. A[pos + 1], A[pos + 2])
      pos = pos + 3
    else
      error('redsource: unknown snapshot op ' .. tostring(op))
    end
    writes = writes + 1
    if op == 'X' or op == 'F' or op == 'A' or op == 'I' then surelyExists[key] = true end
  end
  -- Count a change only on a snapshot that exists after it: removing from nothing leaves nothing.
  if opCount > 0 then revisions[key] = (revisions[key] or 0) + 1 end
  return pos
end

-- Applies one change, catching a write Redis refuses (a counter past 2^63): raised, the error would end
-- the script with earlier entries written but not recorded. Returns nil, or the error as text and
-- whether the change wrote anything before it; that stays (Redis cannot take it back) and counts as a
-- change of the snapshot.
local function tryChange(key, opCount, pos, entryId)
  local before = writes
  local ok, failure = pcall(applyChange, key, opCount, pos, entryId)
  if ok then return nil end
  local wrote = writes > before
  if wrote then revisions[key] = (revisions[key] or 0) + 1 end
  return tostring(failure), wrote
end

local function skipOps(pos, opCount)
  for _ = 1, opCount do
    local op = A[pos]
    if op == 'X' or op == 'R' or op == 'C' then pos = pos + 1
    elseif op == 'U' then pos = pos + 2
    else pos = pos + 3 end
  end
  return pos
end

local typeOf = {}
local function keyType(key)
  if typeOf[key] == nil then typeOf[key] = redis.call('TYPE', key).ok end
  return typeOf[key]
end
local function isHashOrNone(key)
  local t = keyType(key)
  if t == 'none' then typeOf[key] = 'hash' end
  return t == 'hash' or t == 'none'
end

-- What `_inc` a hash created by this call gets: Redis' time once per call, and a count within it.
local incarnationBase
local incarnations = 0
local function newIncarnation()
  if not incarnationBase then
    local now = redis.call('TIME')
    incarnationBase = now[1] .. string.format('%06d', tonumber(now[2]))
  end
  incarnations = incarnations + 1
  return incarnationBase .. '.' .. incarnations
end

-- `_rev` of every snapshot changed, once per key. A hash with no `_rev` before is new (or made anew
-- after a deletion, or a rebuild's shadow): it gets an `_inc` of its own, so `_inc` and `_rev` together
-- name one content of a key for good (readers cache by them: a rebuild or a recreation can repeat `_rev`).
local function finishRevisions()
  for key, changes in pairs(revisions) do
    -- A change that only removed from a snapshot that does not exist leaves nothing to count on.
    if surelyExists[key] or redis.call('EXISTS', key) == 1 then
      if redis.call('HINCRBY', key, '_rev', changes) == changes then redis.call('HSET', key, '_inc', newIncarnation()) end
    end
  end
end
