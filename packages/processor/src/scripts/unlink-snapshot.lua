#!lua
-- The shebang (no flags) makes Redis refuse the whole script before it runs when it cannot write
-- (OOM under maxmemory, READONLY, MISCONF), never between two of its writes.
--[[
Deletes one snapshot hash for a rebuild: a live snapshot the rebuild did not switch over (its fold
has no such snapshot), or a hash of an abandoned shadow. The marks are read in the same step, so a
snapshot switched meanwhile is never deleted.

Fencing. On one Redis the lease is passed (KEYS[2]) and checked here. On a Redis Cluster (no
KEYS[2]) it is in another slot, and what is checked is what the hash itself holds:
- a rebuild marker ('_at:<stream>' = '<token> <entry id>') with a higher token than the caller's,
  or a `_rebuild` mark 'g<n>' above it: a later rebuild wrote or switched this hash, so the caller
  has lost the lease (RS_REBUILD_LEASE_LOST, nothing deleted);
- a live processors' marker ('_at:<stream>:p<n>' = '<token> <entry id>') beyond the entry id the
  rebuild switched that partition at: the live processors applied to this hash after the switch
  (the caller is a former holder, thawed after its successor finished), so it is kept.

KEYS[1]  the snapshot hash
KEYS[2]  one Redis only: the rebuild lease '<token> <holder JSON>'
ARGV[1]  the rebuild's fencing token
ARGV[2]  a rebuild id: a hash whose `_rebuild` field holds it is kept ('' = none)
ARGV[3]  n: how many rebuild marker fields follow
ARGV[4 .. 3+n]  the rebuild's marker fields ('_at:<stream>')
ARGV[4+n ..]    pairs: a live processors' marker field ('_at:<stream>:p<n>'), the entry id the
                rebuild switched that partition at
Reply    1 deleted, 0 kept or absent; or the error RS_REBUILD_LEASE_LOST
]]
local token = tonumber(ARGV[1])
local function lost(why)
  return redis.error_reply('RS_REBUILD_LEASE_LOST ' .. why)
end
if KEYS[2] then
  local held = redis.call('GET', KEYS[2])
  if not held or string.match(held, '^%d+') ~= ARGV[1] then
    return lost('the rebuild lease is no longer held by fencing token ' .. ARGV[1])
  end
end
local n = tonumber(ARGV[3])
local mark = redis.call('HGET', KEYS[1], '_rebuild')
if not KEYS[2] then
  for i = 4, 3 + n do
    local by = tonumber(string.match(redis.call('HGET', KEYS[1], ARGV[i]) or '', '^(%d+) '))
    if by and by > token then return lost(KEYS[1] .. ' was written since by fencing token ' .. by .. ', not ' .. ARGV[1]) end
  end
  local switchedBy = tonumber(string.match(mark or '', '^g(%d+)$'))
  if switchedBy and switchedBy > token then return lost(KEYS[1] .. ' was switched since by the rebuild ' .. mark) end
end
if ARGV[2] ~= '' and mark == ARGV[2] then return 0 end

--@include entry-ids.lua
if #ARGV > 3 + n and redis.call('EXISTS', KEYS[1]) == 1 then
  local upTo = {}
  for i = 4 + n, #ARGV, 2 do upTo[ARGV[i]] = ARGV[i + 1] end
  for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
    if upTo[field] then
      local at = string.match(redis.call('HGET', KEYS[1], field), '^%d+ (%d+%-%d+)$')
      if at and compareIds(at, upTo[field]) > 0 then return 0 end
    end
  end
end
return redis.call('UNLINK', KEYS[1])
