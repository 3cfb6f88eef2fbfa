#!lua
-- The shebang (no flags) makes Redis refuse the whole script before it runs when it cannot write
-- (OOM under maxmemory, READONLY, MISCONF), never between two of its writes.
--[[
Upgrades a stream from processing before partitions (one cursor per stream, consumers reading with
XREADGROUP) to partitioned processing, once, atomically, whichever processor starts first:
- every entry up to the old cursor is applied: each partition starts there (unless it has a cursor);
- the group is set back to the old cursor, so the entries after it (delivered to consumers that are
  gone, unacked, or never delivered) are routed like new ones, each once;
- the old consumers' pending entries up to the cursor (applied, never acked) are acked.
Then the old cursor is deleted. Every key shares the stream's slot.

KEYS[1]        the stream
KEYS[2]        the old cursor (last applied entry id of the whole stream)
KEYS[3..]      the partition cursors, partition 0 first
ARGV[1]        the consumer group
Reply          the old cursor it adopted, or '' when there was none (nothing to do)
]]
local old = redis.call('GET', KEYS[2])
if not old then return '' end
if not string.match(old, '^%d+%-%d+$') then
  redis.call('DEL', KEYS[2])
  return ''
end
for i = 3, #KEYS do redis.call('SET', KEYS[i], old, 'NX') end
redis.call('XGROUP', 'SETID', KEYS[1], ARGV[1], old)
while true do
  local pending = redis.call('XPENDING', KEYS[1], ARGV[1], '-', old, 1000)
  if #pending == 0 then break end
  local ids = {}
  for _, row in ipairs(pending) do ids[#ids + 1] = row[1] end
  redis.call('XACK', KEYS[1], ARGV[1], unpack(ids))
  if #pending < 1000 then break end
end
redis.call('DEL', KEYS[2])
return old
