#!lua
-- The shebang (no flags) makes Redis refuse the whole script before it runs when it cannot write
-- (OOM under maxmemory, READONLY, MISCONF), never between two of its writes.
--[[
Appends a batch of events to one stream, all or nothing.

KEYS[1]  the stream
KEYS[2]  versions hash: subject -> number of events appended for it through redsource
KEYS[3]  event ids hash: caller-given event id -> entry id (makes retries idempotent)
ARGV[1]  event count; then for each event:
         event id ('' = none), subject ('' = none),
         expected version ('' = any, else the subject's exact event count before this append;
         0 = no events yet; checked on the subject's first event that is not a duplicate),
         field count, then the fields
Reply:   {'OK', entryId, duplicate (0|1), version (-1 = no subject), ...per event}
         or {'CONFLICT', subject, expected, actual}: nothing was written
]]
-- Every write below must succeed once started (a script error keeps what it wrote): check types first.
local wanted = { 'stream', 'hash', 'hash' }
for i = 1, 3 do
  local t = redis.call('TYPE', KEYS[i]).ok
  if t ~= 'none' and t ~= wanted[i] then
    return redis.error_reply('redsource append: ' .. KEYS[i] .. ' is a ' .. t .. ', expected a ' .. wanted[i])
  end
end

local count = tonumber(ARGV[1])
local events = {}
local pos = 2
local versions = {}
local batchIds = {}

for i = 1, count do
  local event = { id = ARGV[pos], subject = ARGV[pos + 1], expected = ARGV[pos + 2] }
  local fieldCount = tonumber(ARGV[pos + 3])
  event.first = pos + 4
  event.last = pos + 3 + fieldCount
  pos = event.last + 1
  if event.id ~= '' then
    event.duplicateOf = redis.call('HGET', KEYS[3], event.id)
    if not event.duplicateOf and batchIds[event.id] then event.sameBatchAs = batchIds[event.id] end
    batchIds[event.id] = i
  end
  if not event.duplicateOf and not event.sameBatchAs and event.subject ~= '' then
    local current = versions[event.subject]
    local firstNew = current == nil
    if firstNew then current = tonumber(redis.call('HGET', KEYS[2], event.subject) or '0') end
    -- The expectation is about the subject before this append: its first event not already appended checks it.
    if firstNew and event.expected ~= '' and tonumber(event.expected) ~= current then
      return { 'CONFLICT', event.subject, event.expected, tostring(current) }
    end
    versions[event.subject] = current + 1
    event.version = current + 1
  end
  events[i] = event
end

local reply = { 'OK' }
for i = 1, count do
  local event = events[i]
  local entryId
  local duplicate = 1
  if event.duplicateOf then
    entryId = event.duplicateOf
  elseif event.sameBatchAs then
    entryId = reply[2 + (event.sameBatchAs - 1) * 3]
  else
    duplicate = 0
    entryId = redis.call('XADD', KEYS[1], '*', unpack(ARGV, event.first, event.last))
    if event.id ~= '' then redis.call('HSET', KEYS[3], event.id, entryId) end
    if event.subject ~= '' then redis.call('HINCRBY', KEYS[2], event.subject, 1) end
  end
  reply[#reply + 1] = entryId
  reply[#reply + 1] = duplicate
  reply[#reply + 1] = event.version or -1
end
return reply
