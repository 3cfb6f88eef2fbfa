#!lua flags=no-writes
--[[
Read your writes on a partitioned projection: has every entry of a stream up to an id that belongs
to one partition been applied? True when the partition's cursor is at or past the id, or when the
stream is routed past the id and the partition has no unapplied entry up to it (the id was another
partition's, or the partition got nothing since). Reads only; every key shares the stream's slot.

KEYS[1]  the source stream
KEYS[2]  the partition's cursor (last applied entry id)
KEYS[3]  the partition stream
ARGV[1]  the consumer group routing the stream
ARGV[2]  the entry id
Reply    {1 or 0, the partition's cursor}
]]
local function compareNumbers(a, b)
  if #a ~= #b then return #a < #b and -1 or 1 end
  if a == b then return 0 end
  return a < b and -1 or 1
end
local function compareIds(a, b)
  local aMs, aSeq = string.match(a, '^(%d+)-(%d+)$')
  local bMs, bSeq = string.match(b, '^(%d+)-(%d+)$')
  if not aMs or not bMs then return -1 end
  local byMs = compareNumbers(aMs, bMs)
  if byMs ~= 0 then return byMs end
  return compareNumbers(aSeq, bSeq)
end

local cursor = redis.call('GET', KEYS[2]) or '0-0'
if compareIds(cursor, ARGV[2]) >= 0 then return { 1, cursor } end
if redis.call('EXISTS', KEYS[1]) == 0 then return { 0, cursor } end
local routed = nil
for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local name, last
  for i = 1, #group, 2 do
    if group[i] == 'name' then name = group[i + 1] elseif group[i] == 'last-delivered-id' then last = group[i + 1] end
  end
  if name == ARGV[1] then routed = last end
end
if not routed or compareIds(routed, ARGV[2]) < 0 then return { 0, cursor } end
if #redis.call('XRANGE', KEYS[3], '(' .. cursor, ARGV[2], 'COUNT', 1) > 0 then return { 0, cursor } end
return { 1, cursor }
