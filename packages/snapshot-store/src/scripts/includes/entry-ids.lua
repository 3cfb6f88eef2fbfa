-- Stream entry ids compared as numbers ('<ms>-<seq>', each part any length).
local function compareNumbers(a, b)
  if #a ~= #b then return #a < #b and -1 or 1 end
  if a == b then return 0 end
  return a < b and -1 or 1
end

local function compareIds(a, b)
  local aMs, aSeq = string.match(a, '^(%d+)-(%d+)$')
  local bMs, bSeq = string.match(b, '^(%d+)-(%d+)$')
  local byMs = compareNumbers(aMs, bMs)
  if byMs ~= 0 then return byMs end
  return compareNumbers(aSeq, bSeq)
end
