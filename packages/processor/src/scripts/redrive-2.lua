#!lua
-- The shebang (no flags) makes Redis refuse the whole script before it runs when it cannot write
-- (OOM under maxmemory, READONLY, MISCONF), never between two of its writes.
--[[
Moves a dead-lettered entry back into its stream, as a new entry at the end, and removes it from
the dead-letter stream: one atomic step, so it is never in both or in neither.

KEYS[1]  the dead-letter stream
KEYS[2]  the original stream
ARGV[1]  the dead letter's id
Reply    the new entry id, or false when no such dead letter exists
]]
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then return false end
local record = found[1][2]
local fieldsJson, entryId
for i = 1, #record, 2 do
  if record[i] == 'fields' then fieldsJson = record[i + 1] end
  if record[i] == 'entry_id' then entryId = record[i + 1] end
end
local fields = cjson.decode(fieldsJson or '[]')
if #fields == 0 and entryId then
  -- Dead-lettered by the apply script itself (it does not carry the fields): the entry is still in the stream.
  local original = redis.call('XRANGE', KEYS[2], entryId, entryId)
  if #original > 0 then fields = original[1][2] end
end
if #fields == 0 then return redis.error_reply('redsource redrive: the entry of dead letter ' .. ARGV[1] .. ' is gone from the stream') end
local newId = redis.call('XADD', KEYS[2], '*', unpack(fields))
redis.call('XDEL', KEYS[1], ARGV[1])
return newId
