-- Applies one aggregator batch atomically: the fence on offsets, the dedupe
-- check, every rollup increment, leaderboards, sessions, and the new offsets.
--
-- All or nothing, for real: Redis does not roll back a script's earlier writes
-- when a later command fails, so the script first reads and checks everything
-- a write depends on (the type of every key it writes, every stored value it
-- adds to) and computes every new value, and only then writes, with commands
-- that cannot fail on keys of the checked types. A refusal (a stored value
-- that is not what InfraPrism writes) is an error starting INFRAPRISM_REFUSED,
-- returned before the first write.
--
-- Money stays exact. A rollup cell packs six non-negative integer counters as
-- decimal text (core/cell.py: Cell.pack); two counters below 10^15 add exactly
-- in a Lua double (the sum stays below 2^53), and longer ones are added digit
-- by digit, so no counter is ever rounded, however large it grows. Session
-- counters are added the same way (HINCRBY would fail past 2^63).
--
-- ARGV[1] is one JSON document (encoding one document is far cheaper on the
-- Python side than passing 100k+ separate arguments):
--   {"offsets_key": k, "ranges": [[partition, from_offset, to_offset], ...],
--    "dedupe": [[set_key, expire_at, [nearby_set_key, ...], [event_id, ...]], ...],
--    "hashes": [[hash_key, expire_at, [member, packed_increment, member, packed_increment, ...]], ...],
--    "zsets":  [[zset_key, expire_at, [member, increment, ...]], ...],
--    "sessions": [[session_key, session_id, index_key, type_index_prefix, entity_index_prefix,
--                  entity_type, entity_id, started_ms, ended_ms, turns, cost, input, output,
--                  shared ("1" when the batch's turns of it name more than one entity)], ...],
--    "sets": [[set_key, [member, ...]], ...],
--    "versions": [data_version_key, ...],   (one per project in the batch; INCR'd)
--    "bucket_versions": [[bucket_versions_key, [field, ...]], ...]}
--      (per project: the rollup and leaderboard keys this batch changes, and the days and
--       months it has events of, as KeyLayout.bucket_versions names them; each bumped by 1)
-- Leaderboard increments are integers as decimal text; a score is the double ZINCRBY would hold.
-- Every integer is a decimal string. A dedupe entry's ids are counted in set_key; they are
-- duplicates when any nearby set (core/dedupe.py: the slots within the window) holds them.
-- (The per-type and per-entity session index keys are prefix .. entity_type [.. US .. entity_id],
--  as KeyLayout.session_type_index and session_entity_index build them from the prefixes
--  session_type_index_prefix and session_entity_index_prefix, which the batch carries.)
--   "prices": null, or {"version_key": k, "version": v, "changed_key": k, "projects": [project, ...],
--    "marks_key": k, "kept_dead": ["P@OFFSET", ...]} when the batch priced events (see 1b below).
--   "require": optional [[hash_key, field, expected_value], ...] (see 1a below).
-- Cell and session increments may be negative (a re-price, pipeline/reprice.py); a counter
-- that would go below zero refuses the batch.
-- Returns {"ok"}, {"fenced", partition, stored_offset}, {"stale_prices", current_version},
-- {"unmet", key, field, stored_value}, or
-- {"duplicates", dedupe_key, event_id, dedupe_key, event_id, ...}.

local batch = cjson.decode(ARGV[1])

-- unpack() has a stack limit (about 8,000 values): every variadic command, read or
-- write, takes at most 4,000 values, so no write can fail on it.
local function call_chunked(command, key, items)
  local i = 1
  while i <= #items do
    local stop = math.min(i + 3999, #items)
    redis.call(command, key, unpack(items, i, stop))
    i = stop + 1
  end
end

-- Exact sum of two non-negative decimal integers of any length.
local function add_decimal(a, b)
  local digits, carry = {}, 0
  local i, j = #a, #b
  while i > 0 or j > 0 or carry > 0 do
    local sum = carry
    if i > 0 then sum = sum + string.byte(a, i) - 48 end
    if j > 0 then sum = sum + string.byte(b, j) - 48 end
    digits[#digits + 1] = string.char(48 + sum % 10)
    carry = (sum >= 10) and 1 or 0
    i, j = i - 1, j - 1
  end
  return string.reverse(table.concat(digits))
end

-- Difference a - b of two non-negative decimal integers with a >= b.
local function subtract_decimal(a, b)
  local digits, borrow = {}, 0
  local i, j = #a, #b
  while i > 0 do
    local d = string.byte(a, i) - 48 - borrow
    if j > 0 then d = d - (string.byte(b, j) - 48) end
    if d < 0 then d, borrow = d + 10, 1 else borrow = 0 end
    digits[#digits + 1] = string.char(48 + d)
    i, j = i - 1, j - 1
  end
  local out = string.gsub(string.reverse(table.concat(digits)), '^0+', '')
  return out == '' and '0' or out
end

local function strip_zeros(a)
  local out = string.gsub(a, '^0+', '')
  return out == '' and '0' or out
end

-- Whether non-negative decimal a >= b.
local function at_least(a, b)
  a, b = strip_zeros(a), strip_zeros(b)
  if #a ~= #b then return #a > #b end
  return a >= b
end

-- '%d' prints a double as a 64-bit integer: exact for every sum below 2^53, and more
-- than twice as fast as '%.0f'.
-- Exact a + b for a stored counter a (non-negative) and an increment b that may be
-- negative (a re-price moves costs down as well as up); nil when the sum would be
-- negative, which no counter of real events can be.
local function add_counter(a, b)
  if #a <= 15 and #b <= 15 then
    local sum = tonumber(a) + tonumber(b)
    if sum < 0 then return nil end
    return string.format('%d', sum)
  end
  if string.byte(b, 1) ~= 45 then return add_decimal(a, b) end  -- 45 is '-'
  local magnitude = string.sub(b, 2)
  if not at_least(a, magnitude) then return nil end
  return subtract_decimal(a, magnitude)
end

local CELL = '^(%d+) (%d+) (%d+) (%d+) (%d+) (%d+)$'
local INCREMENT = '^(%-?%d+) (%-?%d+) (%-?%d+) (%-?%d+) (%-?%d+) (%-?%d+)$'

-- The packed sum of a stored cell ("e c i o l n") and an increment (whose counters
-- may be negative), or nil and why: either is not six counters, or a counter would
-- go below zero.
local function add_cells(stored, increment)
  local a1, a2, a3, a4, a5, a6 = string.match(stored, CELL)
  local b1, b2, b3, b4, b5, b6 = string.match(increment, INCREMENT)
  if not a1 or not b1 then return nil, 'is not six counters: ' .. stored end
  if #a1 <= 15 and #b1 <= 15 and #a2 <= 15 and #b2 <= 15 and #a3 <= 15 and #b3 <= 15 and
     #a4 <= 15 and #b4 <= 15 and #a5 <= 15 and #b5 <= 15 and #a6 <= 15 and #b6 <= 15 then
    -- The common case, in one format call: every sum stays below 2^53.
    local s1, s2, s3 = tonumber(a1) + tonumber(b1), tonumber(a2) + tonumber(b2), tonumber(a3) + tonumber(b3)
    local s4, s5, s6 = tonumber(a4) + tonumber(b4), tonumber(a5) + tonumber(b5), tonumber(a6) + tonumber(b6)
    if s1 < 0 or s2 < 0 or s3 < 0 or s4 < 0 or s5 < 0 or s6 < 0 then
      return nil, 'would go below zero: ' .. stored .. ' plus ' .. increment
    end
    return string.format('%d %d %d %d %d %d', s1, s2, s3, s4, s5, s6)
  end
  local sums = {add_counter(a1, b1), add_counter(a2, b2), add_counter(a3, b3), add_counter(a4, b4),
                add_counter(a5, b5), add_counter(a6, b6)}
  for k = 1, 6 do
    if not sums[k] then return nil, 'would go below zero: ' .. stored .. ' plus ' .. increment end
  end
  return table.concat(sums, ' ')
end

local function refused(why)
  return redis.error_reply('INFRAPRISM_REFUSED ' .. why)
end

-- A read of a key the script then writes: an error (the key holds another type) is
-- the refusal, before any write; a TYPE call a key would cost as much as the read.
local function read(command, key, ...)
  local reply = redis.pcall(command, key, ...)
  if type(reply) == 'table' and reply.err then
    return nil, 'key ' .. key .. ': ' .. reply.err
  end
  return reply
end

-- A counter as InfraPrism stores it: decimal digits only.
local function is_counter(value)
  return string.match(value, '^%d+$') ~= nil
end

-- The type of every key written without being read first (and of the nearby dedupe
-- sets, to skip those that do not exist), checked once.
local key_types = {}
local function wrong_type(key, expected)
  local found = key_types[key]
  if not found then
    found = redis.call('TYPE', key)['ok']
    key_types[key] = found
  end
  if found ~= 'none' and found ~= expected then
    return 'key ' .. key .. ' holds a ' .. found .. ', not a ' .. expected
  end
  return nil
end

-- 1. The fence: each partition's batch must start where the last applied one ended.
local offsets_key = batch.offsets_key
local offset_args = {}
local problem
for _, range in ipairs(batch.ranges) do
  local partition, from_offset, to_offset = range[1], range[2], range[3]
  local stored, failure = read('HGET', offsets_key, partition)
  if failure then return refused(failure) end
  if stored and not string.match(stored, '^%-?%d+$') then  -- `rebuild` fences with -1
    return refused('offset of partition ' .. partition .. ' in ' .. offsets_key .. ' is not an offset: ' .. stored)
  end
  if stored and stored ~= from_offset then
    return {'fenced', partition, stored}
  end
  offset_args[#offset_args + 1] = partition
  offset_args[#offset_args + 1] = to_offset
end

-- 1a. What else the batch rests on (a re-price: its job, pipeline/reprice.py): each
-- [key, field, expected] of `require` must hold, or the batch is refused as unmet.
for _, requirement in ipairs(batch.require or {}) do
  local stored, failure = read('HGET', requirement[1], requirement[2])
  if failure then return refused(failure) end
  if stored ~= requirement[3] then
    return {'unmet', requirement[1], requirement[2], stored or ''}
  end
end

-- 1b. Prices: a batch that priced events (`prices` is not null) applies only while no
-- project it priced has changed its prices since the version it priced them with, so
-- that once a project's price changes every batch applied after it has the new price
-- (a re-price relies on it), and another project's change refuses nothing of it. Each
-- partition range is marked with the version its events were priced at, where that
-- differs from the partition's last mark.
local mark_args = {}
local prices = batch.prices
if type(prices) == 'table' then
  local current, failure = read('GET', prices.version_key)
  if failure then return refused(failure) end
  current = current or '0'
  if current ~= prices.version then
    -- Changes since: only one of a project this batch priced makes it stale.
    for _, project in ipairs(prices.projects) do
      local changed, failure = read('HGET', prices.changed_key, project)
      if failure then return refused(failure) end
      if changed and tonumber(changed) > tonumber(prices.version) then
        return {'stale_prices', current}
      end
    end
  end
  local marks_key = prices.marks_key
  problem = wrong_type(marks_key, 'hash')
  if problem then return refused(problem) end
  for _, range in ipairs(batch.ranges) do
    local last, failure = read('HGET', marks_key, range[1])
    if failure then return refused(failure) end
    if last ~= prices.version then
      mark_args[#mark_args + 1] = range[1]
      mark_args[#mark_args + 1] = prices.version
      mark_args[#mark_args + 1] = range[1] .. ':' .. range[2]
      mark_args[#mark_args + 1] = prices.version
    end
  end
  -- Messages an earlier decode sent to the DLQ, kept dead letters though this version prices them.
  for _, position in ipairs(prices.kept_dead or {}) do
    mark_args[#mark_args + 1] = position
    mark_args[#mark_args + 1] = 'dead'
  end
end

-- 2. Dedupe: refuse the batch, naming every id already counted in a nearby slot,
-- so the caller can drop those copies and resend. Nothing has been written yet.
local duplicates = {'duplicates'}
for _, entry in ipairs(batch.dedupe) do
  local key, nearby, ids = entry[1], entry[3], entry[4]
  problem = wrong_type(key, 'set')
  if problem then return refused(problem) end
  for _, near in ipairs(nearby) do
    problem = wrong_type(near, 'set')
    if problem then return refused(problem) end
    if key_types[near] == 'set' then
      local i = 1
      while i <= #ids do
        local stop = math.min(i + 3999, #ids)
        local seen = redis.call('SMISMEMBER', near, unpack(ids, i, stop))
        for j = 1, #seen do
          if seen[j] == 1 then
            duplicates[#duplicates + 1] = key
            duplicates[#duplicates + 1] = ids[i + j - 1]
          end
        end
        i = stop + 1
      end
    end
  end
end
if #duplicates > 1 then
  return duplicates
end

-- 3. The new rollup cells, computed before anything is written: one HMGET reads
-- the stored cells of up to 2,000 members (within unpack()'s limit), one HSET
-- per chunk writes their sums below. A stored cell that is not six counters
-- refuses the batch whole: a counter is never guessed at.
local cell_writes = {}
for _, entry in ipairs(batch.hashes) do
  local key, cells = entry[1], entry[3]
  local i = 1
  while i <= #cells do
    local stop = math.min(i + 3999, #cells)
    local members = {}
    for j = i, stop, 2 do members[#members + 1] = cells[j] end
    local stored, failure = read('HMGET', key, unpack(members))
    if failure then return refused(failure) end
    local args = {}
    for k = 1, #members do
      local increment = cells[i + 2 * k - 1]
      local value, why = increment, nil
      if stored[k] then
        value, why = add_cells(stored[k], increment)
      elseif string.find(increment, '-', 1, true) then
        -- A new cell is its increment (most of a backfill's cells are new: no parsing, no
        -- sums); a negative one would start a counter below zero.
        value, why = nil, 'would start below zero: ' .. increment
      end
      if not value then
        return refused('rollup cell ' .. key .. ' ' .. members[k] .. ' ' .. why)
      end
      args[#args + 1] = members[k]
      args[#args + 1] = value
    end
    cell_writes[#cell_writes + 1] = {key, args}
    i = stop + 1
  end
end

-- Leaderboards: each key's new scores from one ZMSCORE, written by one ZADD below
-- (a ZINCRBY per member was a call per member). The sum is the double addition
-- ZINCRBY does; '%.17g' writes that double back exactly.
local zset_writes = {}
for _, entry in ipairs(batch.zsets) do
  local key, members = entry[1], entry[3]
  local i = 1
  while i <= #members do
    local stop = math.min(i + 3999, #members)
    local names = {}
    for j = i, stop, 2 do names[#names + 1] = members[j] end
    local stored, failure = read('ZMSCORE', key, unpack(names))
    if failure then return refused(failure) end
    local args = {}
    for k = 1, #names do
      local score = tonumber(members[i + 2 * k - 1])
      if stored[k] then score = score + tonumber(stored[k]) end
      args[#args + 1] = string.format('%.17g', score)
      args[#args + 1] = names[k]
    end
    zset_writes[#zset_writes + 1] = {key, args}
    i = stop + 1
  end
end

-- 4. Sessions: each record's new fields, and which index entries move.
local SESSION_FIELDS = {'started_ms', 'ended_ms', 'entity_type', 'entity_id', 'turns', 'cost', 'input', 'output'}
local session_writes = {}
for _, s in ipairs(batch.sessions) do
  local key, session_id = s[1], s[2]
  local index_key, type_index_prefix, entity_index_prefix = s[3], s[4], s[5]
  local entity_type, entity_id = s[6], s[7]
  local started_ms, ended_ms = s[8], s[9]
  local current, failure = read('HMGET', key, unpack(SESSION_FIELDS))
  if failure then return refused(failure) end
  for k = 1, 8 do
    if k ~= 3 and k ~= 4 and current[k] and not is_counter(current[k]) then
      return refused('session ' .. key .. ' field ' .. SESSION_FIELDS[k] .. ' is not a counter: ' .. current[k])
    end
  end
  if current[1] and (not current[2] or not current[3] or not current[4] or #current[1] > 15 or #current[2] > 15) then
    return refused('session ' .. key .. ' has no valid start, end or entity')
  end
  local removed = nil
  -- Turns of more than one entity under one id: the session's totals mix them (and it stays so).
  local shared = s[14] == '1'
  if current[1] and (current[3] ~= entity_type or current[4] ~= entity_id) then shared = true end
  if current[1] then
    if tonumber(started_ms) < tonumber(current[1]) then
      -- An earlier turn arrived late: it names the start and the entity.
      if current[3] ~= entity_type or current[4] ~= entity_id then
        removed = {type_index_prefix .. current[3], entity_index_prefix .. current[3] .. '\031' .. current[4]}
      end
    else
      entity_type, entity_id, started_ms = current[3], current[4], current[1]
    end
    if tonumber(ended_ms) < tonumber(current[2]) then ended_ms = current[2] end
  end
  local indexes = {index_key, type_index_prefix .. entity_type,
                   entity_index_prefix .. entity_type .. '\031' .. entity_id}
  for _, index in ipairs(indexes) do
    problem = wrong_type(index, 'zset')
    if problem then return refused(problem) end
  end
  for _, index in ipairs(removed or {}) do
    problem = wrong_type(index, 'zset')
    if problem then return refused(problem) end
  end
  local turns, cost = add_counter(current[5] or '0', s[10]), add_counter(current[6] or '0', s[11])
  local input, output = add_counter(current[7] or '0', s[12]), add_counter(current[8] or '0', s[13])
  if not (turns and cost and input and output) then
    return refused('session ' .. key .. ' would have a counter below zero')
  end
  session_writes[#session_writes + 1] = {
    key = key, session_id = session_id, started_ms = started_ms, removed = removed, indexes = indexes,
    fields = {'entity_type', entity_type, 'entity_id', entity_id, 'started_ms', started_ms, 'ended_ms', ended_ms,
              'turns', turns, 'cost', cost, 'input', input, 'output', output},
  }
  if shared then
    local fields = session_writes[#session_writes].fields
    fields[#fields + 1] = 'shared'
    fields[#fields + 1] = '1'
  end
end

for _, entry in ipairs(batch.sets) do
  problem = wrong_type(entry[1], 'set')
  if problem then return refused(problem) end
end

-- 5. Versions: a data version of at most 18 digits, so INCR cannot overflow; bucket
-- versions of at most 15, added in a double (exact below 2^53) and written by one HSET.
for _, key in ipairs(batch.versions) do
  problem = wrong_type(key, 'string')
  if problem then return refused(problem) end
  local stored = redis.call('GET', key)
  if stored and not (is_counter(stored) and #stored <= 18) then
    return refused('version ' .. key .. ' is not a counter: ' .. stored)
  end
end
local version_writes = {}
for _, entry in ipairs(batch.bucket_versions) do
  local fields = entry[2]
  local i = 1
  while i <= #fields do
    local stop = math.min(i + 1999, #fields)  -- the HSET below takes two values a field
    local stored, failure = read('HMGET', entry[1], unpack(fields, i, stop))
    if failure then return refused(failure) end
    local args = {}
    for k = 1, stop - i + 1 do
      local version = stored[k] or '0'
      if not (is_counter(version) and #version <= 15) then
        return refused('bucket version ' .. entry[1] .. ' ' .. fields[i + k - 1] .. ' is not a counter')
      end
      args[#args + 1] = fields[i + k - 1]
      args[#args + 1] = string.format('%.0f', tonumber(version) + 1)
    end
    version_writes[#version_writes + 1] = {entry[1], args}
    i = stop + 1
  end
end

-- From here on the batch is accepted: write everything, with commands that cannot
-- fail on the keys and values checked above.
for _, entry in ipairs(batch.dedupe) do
  local key, expire_at, ids = entry[1], tonumber(entry[2]), entry[4]
  call_chunked('SADD', key, ids)
  if expire_at > 0 then redis.call('EXPIREAT', key, expire_at) end
end

-- Each {key, args} of `writes` as one `command`, then each entry's {key, expire_at}.
local function write_and_expire(command, writes, entries)
  for _, write in ipairs(writes) do
    redis.call(command, write[1], unpack(write[2]))
  end
  for _, entry in ipairs(entries) do
    local expire_at = tonumber(entry[2])
    if expire_at > 0 then redis.call('EXPIREAT', entry[1], expire_at) end
  end
end

write_and_expire('HSET', cell_writes, batch.hashes)
-- Scores are sums of finite increments (a cost is at most 10^15 nano-dollars), so ZADD
-- never meets the NaN it refuses.
write_and_expire('ZADD', zset_writes, batch.zsets)

for _, w in ipairs(session_writes) do
  redis.call('HSET', w.key, unpack(w.fields))
  if w.removed then
    redis.call('ZREM', w.removed[1], w.session_id)
    redis.call('ZREM', w.removed[2], w.session_id)
  end
  for _, index in ipairs(w.indexes) do
    redis.call('ZADD', index, w.started_ms, w.session_id)
  end
end

for _, entry in ipairs(batch.sets) do
  call_chunked('SADD', entry[1], entry[2])
end

for _, key in ipairs(batch.versions) do
  redis.call('INCR', key)
end
for _, write in ipairs(version_writes) do
  redis.call('HSET', write[1], unpack(write[2]))
end

if #mark_args > 0 then
  redis.call('HSET', prices.marks_key, unpack(mark_args))
end
if #offset_args > 0 then
  redis.call('HSET', offsets_key, unpack(offset_args))
end
return {'ok'}
