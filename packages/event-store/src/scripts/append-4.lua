#!lua
-- The shebang (no flags) makes Redis refuse the whole script before it runs when it cannot write
-- (OOM under maxmemory, READONLY, MISCONF), never between two of its writes.
--[[
Appends a batch of events to one stream, all or nothing, and forgets event ids past the window.

KEYS[1]  the stream
KEYS[2]  versions hash: subject -> number of events appended for it through redsource
KEYS[3]  event ids hash: caller-given event id -> entry id (makes retries idempotent)
KEYS[4]  event ids by age: sorted set of the same ids, scored by their entry id (ms + seq / 2048)
ARGV[1]  the window's time (ms): an id appended longer ago than this (by Redis' clock) is forgotten
ARGV[2]  the window's count: only the newest this many ids are remembered
ARGV[3]  event count
ARGV[4]  the events as one JSON array (one argument instead of thousands); in it, for each event:
         event id ('' = none), subject ('' = none),
         expected version ('' = any, else the subject's exact event count before this append;
         0 = no events yet; checked on the subject's first event that is not a duplicate),
         field count, then the fields
Reply:   {'OK', entry ids, duplicates, versions}, each one string with a value per event, in order:
         the entry ids separated by spaces, a '0' or '1' per event (1 = a duplicate: its id was
         appended before, or earlier in this call), the subject's count after the event separated
         by spaces (-1 = no subject, or a duplicate); three strings cost Redis and the client far
         less than an array of three values per event
         or {'CONFLICT', subject, expected, actual}: nothing was written
]]
local windowMs = tonumber(ARGV[1])
local maxIds = tonumber(ARGV[2])
local count = tonumber(ARGV[3])
local A = cjson.decode(ARGV[4])
-- A count as Redis and the client read it back: tostring and table.concat write 1e+14 from 10^14 on.
local function digits(n)
  if n < 1e14 then return n end
  return string.format('%d', n)
end
local function msOf(entryId) return tonumber(string.match(entryId, '^(%d+)-')) end
-- The entry id as a score, exact in a double (2^42 ms, 11 bits of seq; later seqs of one ms tie).
-- Formatted here: Redis would turn a Lua number into a string with 14 digits, losing the seq.
local function ageOf(entryId)
  local ms, seq = string.match(entryId, '^(%d+)-(%d+)$')
  return string.format('%.11f', tonumber(ms) + math.min(tonumber(seq), 2047) / 2048)
end

-- The events as laid out in A, and their ids.
local events = {}
local idList = {}
local pos = 1
for i = 1, count do
  local event = { id = A[pos], subject = A[pos + 1], expected = A[pos + 2] }
  event.first = pos + 4
  event.last = pos + 3 + tonumber(A[pos + 3])
  pos = event.last + 1
  if event.id ~= '' then idList[#idList + 1] = event.id end
  events[i] = event
end

-- Every write below must succeed once started (a script error keeps what it wrote). A key of another
-- type fails the call before its first write: the versions and the ids' hash are read (HMGET) before
-- it, the stream's first XADD is that first write (a later one refused takes the call's entries
-- back, see `added`), and the age set, written after the XADDs, is
-- checked first. Only a call with ids touches the ids' keys (and trims their window): an append
-- without ids costs no more than the XADDs and the counts.
local wanted = { 'stream', 'hash', 'hash', 'zset' }
local function wrongType(i, t)
  return redis.error_reply('redsource append: ' .. KEYS[i] .. ' is a ' .. t .. ', expected a ' .. wanted[i])
end
-- The error to reply for a failed redis.pcall on KEYS[i], nil when it did not fail.
local function refusal(i, reply)
  if type(reply) ~= 'table' or not reply.err then return nil end
  if string.find(reply.err, 'WRONGTYPE', 1, true) then return wrongType(i, redis.call('TYPE', KEYS[i]).ok) end
  return reply
end
local idsInPlay = #idList > 0
-- Ids remembered from entries older than this are past the window: a resend of one is a new event.
local cutoff
if idsInPlay then
  local t = redis.call('TYPE', KEYS[4]).ok
  if t ~= 'none' and t ~= 'zset' then return wrongType(4, t) end
  local time = redis.call('TIME')
  cutoff = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000) - windowMs
end

-- The values of `names` in the hash KEYS[i] (false where none), one HMGET per 1000 names; or, second,
-- the error to reply when KEYS[i] is not a hash (nothing is written before these reads).
local function readAll(i, names)
  local values = {}
  for first = 1, #names, 1000 do
    local last = math.min(first + 999, #names)
    local found = redis.pcall('HMGET', KEYS[i], unpack(names, first, last))
    local refused = refusal(i, found)
    if refused then return nil, refused end
    for j = first, last do values[names[j]] = found[j - first + 1] end
  end
  return values
end

-- The ids' stored entries.
local storedEntryOf, idsRefused = readAll(3, idList)
if idsRefused then return idsRefused end

-- subject -> its count as this call goes; the subjects with a new event, in order of the first one.
local versions = {}
local subjectList = {}
local batchIds = {}
for i = 1, count do
  local event = events[i]
  if event.id ~= '' then
    event.duplicateOf = storedEntryOf[event.id]
    -- Trimming is lazy: an id still stored but past the window is forgotten already.
    if event.duplicateOf and msOf(event.duplicateOf) < cutoff then event.duplicateOf = false end
    if not event.duplicateOf and batchIds[event.id] then event.sameBatchAs = batchIds[event.id] end
    batchIds[event.id] = i
  end
  event.new = not event.duplicateOf and not event.sameBatchAs
  if event.new and event.subject ~= '' and versions[event.subject] == nil then
    versions[event.subject] = false
    subjectList[#subjectList + 1] = event.subject
  end
end

-- Their counts before this append: one HMGET per 1000 subjects, not a call per subject.
local stored, versionsRefused = readAll(2, subjectList)
if versionsRefused then return versionsRefused end
for _, subject in ipairs(subjectList) do
  local counted = stored[subject] or '0'
  -- Only this script writes the counts; anything else there (a hand edit) is refused, not compared:
  -- 'nan' would fail every expectedVersion comparison silently.
  if not string.match(counted, '^%d+$') then
    return redis.error_reply('redsource append: ' .. KEYS[2] .. ' holds ' .. string.format('%q', counted)
      .. ' for subject ' .. string.format('%q', subject) .. ', not a count of events: set it to the number of its events, or delete the field')
  end
  versions[subject] = tonumber(counted)
end

-- The expectation is about the subject before this append: its first event not already appended checks it.
local checked = {}
for i = 1, count do
  local event = events[i]
  if event.new and event.subject ~= '' then
    local current = versions[event.subject]
    if not checked[event.subject] then
      checked[event.subject] = true
      if event.expected ~= '' and tonumber(event.expected) ~= current then
        return { 'CONFLICT', event.subject, event.expected, tostring(current) }
      end
    end
    versions[event.subject] = current + 1
    event.version = digits(current + 1)
  end
end

local entryIds, duplicates, eventVersions = {}, {}, {}
-- This call's entries so far: a refused XADD takes them back (only a stream at the end of its id
-- space refuses a later XADD than the first), so the call stays all or nothing.
local added = {}
-- Written after the loop, a call per 1000 at most: the ids remembered (hash and age), each subject's new count.
local idPairs, agePairs = {}, {}
for i = 1, count do
  local event = events[i]
  local entryId
  local duplicate = 1
  if event.duplicateOf then
    entryId = event.duplicateOf
  elseif event.sameBatchAs then
    entryId = entryIds[event.sameBatchAs]
  else
    duplicate = 0
    -- Before the first XADD nothing is written: a stream key of another type fails the call here, whole.
    entryId = redis.pcall('XADD', KEYS[1], '*', unpack(A, event.first, event.last))
    if type(entryId) == 'table' then
      for first = 1, #added, 1000 do redis.call('XDEL', KEYS[1], unpack(added, first, math.min(first + 999, #added))) end
      return refusal(1, entryId)
    end
    added[#added + 1] = entryId
    if event.id ~= '' then
      idPairs[#idPairs + 1] = event.id
      idPairs[#idPairs + 1] = entryId
      agePairs[#agePairs + 1] = ageOf(entryId)
      agePairs[#agePairs + 1] = event.id
    end
  end
  entryIds[i] = entryId
  duplicates[i] = duplicate
  eventVersions[i] = event.version or -1
end
for i = 1, #idPairs, 1000 do
  redis.call('HSET', KEYS[3], unpack(idPairs, i, math.min(i + 999, #idPairs)))
  redis.call('ZADD', KEYS[4], unpack(agePairs, i, math.min(i + 999, #agePairs)))
end
-- The new counts, exact: read above in this same script, which nothing else runs during.
local countPairs = {}
for _, subject in ipairs(subjectList) do
  countPairs[#countPairs + 1] = subject
  countPairs[#countPairs + 1] = digits(versions[subject])
end
for i = 1, #countPairs, 1000 do redis.call('HSET', KEYS[2], unpack(countPairs, i, math.min(i + 999, #countPairs))) end

-- Forget the ids past the window: the oldest first, a bounded number per call (each call forgets
-- more than it can add, so the window is kept however it was configured before).
if idsInPlay then
  local budget = count + 1000
  local function forget(ids)
    for i = 1, #ids, 1000 do
      local last = math.min(i + 999, #ids)
      redis.call('HDEL', KEYS[3], unpack(ids, i, last))
      redis.call('ZREM', KEYS[4], unpack(ids, i, last))
    end
    budget = budget - #ids
  end
  forget(redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', '(' .. string.format('%d', cutoff), 'LIMIT', 0, budget))
  local excess = redis.call('ZCARD', KEYS[4]) - maxIds
  if excess > 0 and budget > 0 then forget(redis.call('ZRANGE', KEYS[4], 0, math.min(excess, budget) - 1)) end
end
return { 'OK', table.concat(entryIds, ' '), table.concat(duplicates), table.concat(eventVersions, ' ') }
