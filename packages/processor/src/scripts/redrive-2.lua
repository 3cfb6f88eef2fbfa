#!lua
-- The shebang (no flags) makes Redis refuse the whole script before it runs when it cannot write
-- (OOM under maxmemory, READONLY, MISCONF), never between two of its writes.
--[[
Moves a dead-lettered entry back into its stream, as a new entry at the end, and removes it from
the dead-letter stream: one atomic step, so it is never in both or in neither. The entry is
appended with its exact original bytes (the dead letter's field 'original') when it has them.

KEYS[1]  the dead-letter stream
KEYS[2]  the original stream
ARGV[1]  the dead letter's id
Reply    the new entry id, or false when no such dead letter exists
]]
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then return false end
local record = found[1][2]
local fieldsJson, entryId, original
for i = 1, #record, 2 do
  if record[i] == 'fields' then fieldsJson = record[i + 1] end
  if record[i] == 'entry_id' then entryId = record[i + 1] end
  if record[i] == 'original' then original = record[i + 1] end
end
local fields = {}
if original then
  -- The entry's exact bytes, as netstrings ('<length>:<bytes>,' per item): appended byte for byte.
  local pos = 1
  while pos <= #original do
    local colon = string.find(original, ':', pos, true)
    local length = colon and tonumber(string.sub(original, pos, colon - 1))
    if not length then return redis.error_reply('redsource redrive: dead letter ' .. ARGV[1] .. ' has a malformed original entry') end
    fields[#fields + 1] = string.sub(original, colon + 1, colon + length)
    pos = colon + length + 2
  end
else
  -- Written before dead letters kept the exact bytes: the fields as the processor decoded them.
  fields = cjson.decode(fieldsJson or '[]')
end
if #fields == 0 and entryId then
  -- Dead-lettered by the apply script itself (it does not carry the fields): the entry is still in the stream.
  local original = redis.call('XRANGE', KEYS[2], entryId, entryId)
  if #original > 0 then fields = original[1][2] end
end
if #fields == 0 then return redis.error_reply('redsource redrive: the entry of dead letter ' .. ARGV[1] .. ' is gone from the stream') end
local newId = redis.call('XADD', KEYS[2], '*', unpack(fields))
redis.call('XDEL', KEYS[1], ARGV[1])
return newId
