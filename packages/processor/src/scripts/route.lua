#!lua
-- The shebang (no flags) makes Redis refuse the whole script before it runs when it cannot write
-- (OOM under maxmemory, READONLY, MISCONF), never between two of its writes.
--[[
Routes the next entries of a source stream (as any client XADDs them) into the projection's
partition streams: each entry is copied, under its own id, to the partition of its subject, and
taken from the consumer group in the same atomic step: read with XREADGROUP NOACK, which moves the
group's last-delivered-id and entries-read (so XINFO GROUPS lag stays exact) without a pending entry
to insert and ack again per entry; the group is left with nothing pending. Every key shares the source stream's slot.

The group's last-delivered-id is how far the stream is routed: an entry is routed exactly once
whoever calls this, and concurrent callers each take the next entries. A partition stream gets its
entries in stream order, so one owner applies a subject's entries in order.

KEYS[1]      the source stream (its consumer group must exist)
KEYS[2]      the projection's partition count, written on the first call; a call with another
             count fails RS_PARTITIONS_MISMATCH (the entries routed so far would change partition)
KEYS[3..]    the partition streams, partition 0 first (ARGV[3] of them)
ARGV[1]      consumer group
ARGV[2]      most entries to route in this call
ARGV[3]      partition count
ARGV[4]      the subject's field names as a JSON array, in order of preference: looked up among a
             flat entry's fields or in an envelope's `data` object; an envelope's `subject` comes
             after them. No subject: partition 0.
Reply        {routed, last id routed, or the group's last-delivered-id when nothing was}
]]

local count = tonumber(ARGV[3])
local stored = redis.call('GET', KEYS[2])
if stored and stored ~= ARGV[3] then
  return redis.error_reply('RS_PARTITIONS_MISMATCH the stream is routed to ' .. stored .. ' partitions, not ' .. ARGV[3])
end
if not stored then redis.call('SET', KEYS[2], ARGV[3]) end

-- Entries left pending by consumers of before partitions (adopt-stream-cursor.lua sets the group
-- back below them) are acked once routed, as XREADGROUP without NOACK and XACK would leave them.
-- Otherwise nothing is pending (XPENDING's summary: O(consumers)) and nothing needs an ack.
local pendingBefore = redis.call('XPENDING', KEYS[1], ARGV[1])[1] > 0
local reply = redis.call('XREADGROUP', 'GROUP', ARGV[1], 'redsource-router', 'COUNT', ARGV[2], 'NOACK', 'STREAMS', KEYS[1], '>')
if not reply then
  for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
    for i = 1, #group, 2 do
      if group[i] == 'name' and group[i + 1] ~= ARGV[1] then break end
      if group[i] == 'last-delivered-id' then return { 0, group[i + 1] } end
    end
  end
  return { 0, '0-0' }
end

local wanted = cjson.decode(ARGV[4])

-- A JSON number names a subject only as a non-negative integer, written without exponent (-0 is 0).
local function asSubject(value)
  if type(value) == 'string' then return value end
  if type(value) == 'number' and value >= 0 and value == math.floor(value) and value < 9007199254740992 then
    if value == 0 then return '0' end
    return string.format('%.0f', value)
  end
  return nil
end

-- cjson refuses a lone surrogate escape ('\ud800'), which JSON allows: such escapes (never part of a
-- valid subject) are read as '?' on a second try, so the event keeps its user's partition.
local function decodeData(data)
  local ok, decoded = pcall(cjson.decode, data)
  if ok then return decoded end
  ok, decoded = pcall(cjson.decode, (string.gsub(data, '\\[uU][dD][89a-fA-F]%x%x', '?')))
  if ok then return decoded end
  return nil
end

local function subjectOf(fields)
  local envelope, attribute, data = false, nil, nil
  local n = #fields
  for i = 1, n, 2 do
    local name = fields[i]
    if name == 'specversion' then envelope = true
    elseif name == 'subject' then attribute = fields[i + 1]
    elseif name == 'data' then data = fields[i + 1] end
  end
  if not envelope then
    -- The last occurrence of a field name counts (as a table of the fields would keep it).
    for _, wantedName in ipairs(wanted) do
      for i = n - 1, 1, -2 do
        if fields[i] == wantedName then return fields[i + 1] end
      end
    end
    return nil
  end
  if data then
    local decoded = decodeData(data)
    if type(decoded) == 'table' then
      for _, name in ipairs(wanted) do
        local subject = asSubject(decoded[name])
        if subject then return subject end
      end
    end
  end
  return attribute
end

-- unpack() takes at most ~8000 values: an entry with more fields is routed as a reference, and the
-- processor reads it from the source stream.
local MAX_FIELDS = 7000
-- A subject's partition, once per call (a batch often holds a subject many times).
local partitionOf = {}
local routed, last, acks = 0, nil, {}
for _, entry in ipairs(reply[1][2]) do
  local id, fields = entry[1], entry[2]
  local subject = subjectOf(fields)
  local partition = 0
  if subject then
    partition = partitionOf[subject]
    if not partition then
      partition = tonumber(string.sub(redis.sha1hex(subject), 1, 8), 16) % count
      partitionOf[subject] = partition
    end
  end
  local target = KEYS[3 + partition]
  local ok
  if #fields > MAX_FIELDS then
    ok = redis.pcall('XADD', target, id, '__redsource_ref', '1')
  else
    ok = redis.pcall('XADD', target, id, unpack(fields))
  end
  -- An id at or below the partition's last one was routed before (a group recreated further back).
  if type(ok) == 'table' and ok.err and not string.find(ok.err, 'equal or smaller', 1, true) then
    return redis.error_reply(ok.err)
  end
  routed = routed + 1
  last = id
  if pendingBefore then acks[#acks + 1] = id end
end
for i = 1, #acks, 1000 do
  redis.call('XACK', KEYS[1], ARGV[1], unpack(acks, i, math.min(i + 999, #acks)))
end
return { routed, last }
