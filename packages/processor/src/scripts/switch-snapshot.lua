#!lua
-- The shebang (no flags) makes Redis refuse the whole script before it runs when it cannot write
-- (OOM under maxmemory, READONLY, MISCONF), never between two of its writes.
--[[
Switches one rebuilt snapshot over: marks the shadow hash with the rebuild id (so the deletion of
unswitched snapshots spares it) and RENAMEs it over its live key (atomic: a reader sees the old or
the new snapshot, never none).

Fencing. On one Redis the lease is passed (KEYS[3]) and checked here: a rebuild that lost it
switches nothing. On a Redis Cluster (no KEYS[3]) the lease is in another slot; the shadow hash
shares its live key's slot (see shadowNaming in replay.ts), and what is checked is what this slot
holds:
- the shadow's markers (ARGV rebuild markers, '<token> <entry id>', written by every shadow apply
  on a cluster): one with a higher token than the caller's means a later holder has written this
  shadow since, so the caller has lost the lease (RS_REBUILD_LEASE_LOST, nothing written);
- the live key's `_rebuild` mark: 'g<n>' above the caller's token means a rebuild that started
  after the caller switched it (RS_REBUILD_LEASE_LOST); equal to the caller's rebuild id means
  this rebuild switched it already, so this shadow hash is an orphan (a late write of a former
  holder of the same rebuild, after the switch): it is deleted, the live snapshot kept.
The markers stay in the hash as it goes live: a live apply checked before the hold and delayed
past this switch skips what they say the rebuild folded in (apply-snapshots.lua, the stream's own
marker).

KEYS[1]  the shadow hash
KEYS[2]  its live key (same slot on a cluster)
KEYS[3]  one Redis only: the rebuild lease '<token> <holder JSON>'
ARGV[1]  the rebuild's fencing token
ARGV[2]  the rebuild id ('g<token of the rebuild's first holder>', or any text)
ARGV[3]  n: how many rebuild marker fields follow (0 on one Redis)
ARGV[4 .. 3+n]  the rebuild's marker fields ('_at:<stream>')
Reply    1 switched, 0 no such shadow hash (switched before) or an orphan deleted; or the error
         RS_REBUILD_LEASE_LOST
]]
local token = tonumber(ARGV[1])
local function lost(why)
  return redis.error_reply('RS_REBUILD_LEASE_LOST ' .. why)
end
if KEYS[3] then
  local held = redis.call('GET', KEYS[3])
  if not held or string.match(held, '^%d+') ~= ARGV[1] then
    return lost('the rebuild lease is no longer held by fencing token ' .. ARGV[1])
  end
end
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
-- A live key of another type is replaced, as before (the snapshot is rebuilt into a hash).
local mark = redis.call('TYPE', KEYS[2]).ok == 'hash' and redis.call('HGET', KEYS[2], '_rebuild') or nil
if not KEYS[3] then
  for i = 4, 3 + tonumber(ARGV[3]) do
    local by = tonumber(string.match(redis.call('HGET', KEYS[1], ARGV[i]) or '', '^(%d+) '))
    if by and by > token then return lost(KEYS[1] .. ' was written since by fencing token ' .. by .. ', not ' .. ARGV[1]) end
  end
  local switchedBy = tonumber(string.match(mark or '', '^g(%d+)$'))
  if switchedBy and switchedBy > token then return lost(KEYS[2] .. ' was switched since by the rebuild ' .. mark) end
end
if mark == ARGV[2] then
  redis.call('UNLINK', KEYS[1])
  return 0
end
redis.call('HSET', KEYS[1], '_rebuild', ARGV[2])
redis.call('RENAME', KEYS[1], KEYS[2])
return 1
