-- /entities/top in one atomic, read-only call.
--
-- KEYS: ARGV[3] leaderboards, ARGV[4] entity rollups of the range, then the entity-rollup
-- hashes of the range's edges: the reads of the UTC days it covers in part, when it does not
-- start and end at UTC midnight (the boards hold whole UTC days only).
-- ARGV: [1] the limit, [2] "desc" or "asc", [3] the number of boards, [4] the number of
-- rollups, [5] the quarter-hour separator (keys.QUARTER_SEP), [6] the most members and edge
-- fields the call may walk (api/bounds.py MAX_BOARD_MEMBERS), then each board's weight (1,
-- or -1 for a subtracted bucket), then each rollup's field suffix ("" for the member's cell,
-- or a quarter hour's: keys.quarter_member), then the entity-type prefix the members must
-- have ("" for any), then for each edge hash its field suffix and its sign.
--
-- A member's score is its signed board score plus its signed edge costs: its cost over the
-- range, as a double. The first `limit` places by score, and every member tied with the last
-- of them, are the candidates; the caller settles the exact order from the integer counters.
-- Only they travel, with their cells from every rollup, read in the same call, so the
-- candidates and their numbers are one moment's data. A member counted only in subtracted
-- buckets scores 0 with no events in the range and the caller drops it: so ascending keeps
-- every score <= 0 and the first places after them, and descending reaches zero scores only
-- when it takes all of them.
--
-- Returns {candidates, {their cells in rollup 1}, {... rollup 2}, ...}, or, when the boards
-- and edges hold more than ARGV[6] entries, that count alone, having read nothing else.
local limit = tonumber(ARGV[1])
local boards = tonumber(ARGV[3])
local rollups = tonumber(ARGV[4])
local quarter_sep = ARGV[5]
local at = 6 + boards + rollups
local type_prefix = ARGV[at + 1]
local edges = #KEYS - boards - rollups

-- ZCARD and HLEN cost nothing per member: count before walking anything.
local entries = 0
for i = 1, boards do entries = entries + redis.call('ZCARD', KEYS[i]) end
for e = 1, edges do entries = entries + redis.call('HLEN', KEYS[boards + rollups + e]) end
if entries > tonumber(ARGV[6]) then return entries end

local flat = {}
if boards > 0 then
  local args = {'ZUNION', boards}
  for i = 1, boards do args[#args + 1] = KEYS[i] end
  args[#args + 1] = 'WEIGHTS'
  for i = 1, boards do args[#args + 1] = ARGV[6 + i] end
  args[#args + 1] = 'WITHSCORES'
  flat = redis.call(unpack(args))
end

if edges > 0 then
  -- Add the edges' costs to the board scores, then order all members by the sum.
  local scores = {}
  for i = 1, #flat, 2 do scores[flat[i]] = tonumber(flat[i + 1]) end
  for e = 1, edges do
    local key = KEYS[boards + rollups + e]
    local suffix, sign = ARGV[at + 2 * e], tonumber(ARGV[at + 2 * e + 1])
    local fields = redis.call('HGETALL', key)
    for i = 1, #fields, 2 do
      local field, member = fields[i], nil
      if suffix == '' then
        if not string.find(field, quarter_sep, 1, true) then member = field end
      elseif string.sub(field, -#suffix) == suffix then
        member = string.sub(field, 1, #field - #suffix)
      end
      if member and (type_prefix == '' or string.sub(member, 1, #type_prefix) == type_prefix) then
        local cost = tonumber(string.match(fields[i + 1], '^%d+ (%d+)'))
        scores[member] = (scores[member] or 0) + sign * cost
      end
    end
  end
  local members = {}
  for member in pairs(scores) do members[#members + 1] = member end
  table.sort(members, function(a, b)
    if scores[a] ~= scores[b] then return scores[a] < scores[b] end
    return a < b
  end)
  flat = {}
  for _, member in ipairs(members) do
    flat[#flat + 1] = member
    flat[#flat + 1] = scores[member]
  end
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
local candidates = {}
for i = first, last do candidates[#candidates + 1] = flat[2 * i - 1] end

local out = {candidates}
for k = 1, rollups do
  local key, suffix = KEYS[boards + k], ARGV[6 + boards + k]
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
