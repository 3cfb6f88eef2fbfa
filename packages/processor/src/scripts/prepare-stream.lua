#!lua
-- The shebang (no flags) makes Redis refuse the whole script before it runs when it cannot write
-- (OOM under maxmemory, READONLY, MISCONF), never between two of its writes.
--[[
Makes a source stream ready for a group's partitioned processing, atomically, whichever processor
of the group comes first: the consumer group exists (it marks where the projection starts: a group
created at '$' starts after the entries already there), the partition count is fixed, and every
partition has a cursor (all of its entries up to the cursor are applied). Every key shares the
stream's slot.

KEYS[1]    the stream (created empty if missing)
KEYS[2]    the partition count of the group on this stream, written on the first call; a call with
           another count fails RS_PARTITIONS_MISMATCH (the cursors would not mean the same entries)
KEYS[3]    the cursor of before partitions (one per stream: the last entry of it applied): if it
           exists, every partition starts there (the stream is upgraded, once), the old consumers'
           pending entries are acked, and it is deleted
KEYS[4..]  the partition cursors, partition 0 first
ARGV[1]    consumer group
ARGV[2]    partition count
ARGV[3]    where a new group starts: '0' (the beginning), '$' (after the last entry) or an entry id
Reply      {1 when the group was created now else 0, the old cursor adopted or ''}
]]

local stored = redis.call('GET', KEYS[2])
if stored and stored ~= ARGV[2] then
  return redis.error_reply('RS_PARTITIONS_MISMATCH the stream is processed in ' .. stored .. ' partitions, not ' .. ARGV[2])
end
if not stored then redis.call('SET', KEYS[2], ARGV[2]) end

local created = redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], ARGV[3], 'MKSTREAM')
local existed = type(created) == 'table' and created.err
if existed and not string.find(created.err, 'BUSYGROUP', 1, true) then return redis.error_reply(created.err) end

local old = redis.call('GET', KEYS[3])
local adopted = ''
if old then
  redis.call('DEL', KEYS[3])
  if string.match(old, '^%d+%-%d+$') then
    adopted = old
    for i = 4, #KEYS do redis.call('SET', KEYS[i], old, 'NX') end
    -- Delivered to consumers of before partitions and never acked: nothing reads the group's
    -- pending entries any more (those past the cursor are read from the stream like the rest).
    if existed then
      while true do
        local pending = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1000)
        if #pending == 0 then break end
        local ids = {}
        for _, row in ipairs(pending) do ids[#ids + 1] = row[1] end
        redis.call('XACK', KEYS[1], ARGV[1], unpack(ids))
      end
    end
  end
end

if existed then
  -- A partition with no cursor has applied nothing (applying writes the cursor).
  for i = 4, #KEYS do redis.call('SET', KEYS[i], '0-0', 'NX') end
  return { 0, adopted }
end

-- Created now: every partition starts where the group does.
local start = '0-0'
for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local name, delivered
  for i = 1, #group, 2 do
    if group[i] == 'name' then name = group[i + 1] end
    if group[i] == 'last-delivered-id' then delivered = group[i + 1] end
  end
  if name == ARGV[1] and delivered then start = delivered end
end
for i = 4, #KEYS do redis.call('SET', KEYS[i], start, 'NX') end
return { 1, adopted }
