-- /entities/top in one atomic, read-only call.
--
-- KEYS: ARGV[3] leaderboards, ARGV[4] entity rollups of the range, then the entity hashes of
-- the range's edges (the hours it covers in part, when it does not start and end at UTC
-- midnight: the boards hold whole UTC days only).
-- ARGV: [1] the limit, [2] "desc" or "asc", [3] the number of boards, [4] the number of
-- rollups, [5] the quarter-hour separator (keys.QUARTER_SEP), then each board's weight (1, or
-- -1 for a subtracted bucket), then each rollup's field suffix ("" for the member's cell, or
-- a quarter hour's: keys.quarter_member).
--
-- The candidates are every entity of the edges, and the first places of the boards' signed
-- union, as many more as there are edge entities, plus every member tied with the last of
-- them. An entity outside the edges totals its board score, so no true place is missed; the
-- caller settles the exact order from the integer counters. Only the candidates travel, with
-- their cells from every rollup, read in the same call, so the candidates and their numbers
-- are one moment's data. A member counted only in subtracted boards scores 0 with no events
-- in the range and the caller drops it: so ascending keeps every score <= 0 and the first
-- places after them, and descending reaches zero scores only when it takes all of them.
--
-- Returns {candidates, {their cells in rollup 1}, {... rollup 2}, ...}.
local limit = tonumber(ARGV[1])
local boards = tonumber(ARGV[3])
local rollups = tonumber(ARGV[4])
local quarter_sep = ARGV[5]

local candidates, seen = {}, {}
local function add(member)
  if not seen[member] then
    seen[member] = true
    candidates[#candidates + 1] = member
  end
end
for k = boards + rollups + 1, #KEYS do
  for _, field in ipairs(redis.call('HKEYS', KEYS[k])) do
    local cut = string.find(field, quarter_sep, 1, true)
    add(cut and string.sub(field, 1, cut - 1) or field)
  end
end
limit = limit + #candidates

local flat = {}
if boards > 0 then
  local args = {'ZUNION', boards}
  for i = 1, boards do args[#args + 1] = KEYS[i] end
  args[#args + 1] = 'WEIGHTS'
  for i = 1, boards do args[#args + 1] = ARGV[5 + i] end
  args[#args + 1] = 'WITHSCORES'
  flat = redis.call(unpack(args))
end
local n = #flat / 2
local first, last = 1, n
if ARGV[2] == 'desc' then
  if n > limit then
    first = n - limit + 1
    local boundary = tonumber(flat[2 * first])
    while first > 1 and tonumber(flat[2 * (first - 1)]) == boundary do first = first - 1 end
  end
else
  local zeros = 0
  while zeros < n and tonumber(flat[2 * (zeros + 1)]) <= 0 do zeros = zeros + 1 end
  last = math.min(n, zeros + limit)
  if last > 0 then
    local boundary = tonumber(flat[2 * last])
    while last < n and tonumber(flat[2 * (last + 1)]) == boundary do last = last + 1 end
  end
end
for i = first, last do add(flat[2 * i - 1]) end

local out = {candidates}
for k = 1, rollups do
  local key, suffix = KEYS[boards + k], ARGV[5 + boards + k]
  local cells = {}
  -- In chunks: unpack() of more than a few thousand values overflows Lua's stack.
  for from = 1, #candidates, 1000 do
    local fields = {}
    for i = from, math.min(from + 999, #candidates) do fields[#fields + 1] = candidates[i] .. suffix end
    local chunk = redis.call('HMGET', key, unpack(fields))
    for i = 1, #chunk do cells[#cells + 1] = chunk[i] end
  end
  out[#out + 1] = cells
end
return out
