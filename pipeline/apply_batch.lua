-- Applies one aggregator batch atomically: the fence on offsets, the dedupe
-- check, every rollup increment, leaderboards, sessions, and the new offsets.
-- Either all of it happens or none of it does (the script writes nothing
-- before its checks pass).
--
-- Money stays exact. A rollup cell packs six non-negative integer counters as
-- decimal text (KeyLayout / keys.pack_cell); two counters below 10^15 add exactly
-- in a Lua double (the sum stays below 2^53), and longer ones are added digit
-- by digit, so no counter is ever rounded, however large it grows.
--
-- ARGV[1] is one JSON document (encoding one document is far cheaper on the
-- Python side than passing 100k+ separate arguments):
--   {"offsets_key": k, "ranges": [[partition, from_offset, to_offset], ...],
--    "dedupe": [[set_key, expire_at, [event_id, ...]], ...],
--    "hashes": [[hash_key, expire_at, [member, packed_increment, member, packed_increment, ...]], ...],
--    "zsets":  [[zset_key, expire_at, [member, increment, ...]], ...],
--    "sessions": [[session_key, session_id, index_key, type_index_prefix, entity_index_prefix,
--                  entity_type, entity_id, started_ms, ended_ms, turns, cost, input, output], ...],
--    "sets": [[set_key, [member, ...]], ...],
--    "versions": [data_version_key, ...],   (one per project in the batch; INCR'd)
--    "bucket_versions": [[bucket_versions_key, [field, ...]], ...]}
--      (per project: the rollup and leaderboard keys this batch changes, and the days and
--       months it has events of, as KeyLayout.bucket_versions names them; each HINCRBY'd by 1)
-- Every integer is a decimal string.
-- (The per-type and per-entity session index keys are prefix .. entity_type [.. US .. entity_id],
--  as KeyLayout.session_type_index and session_entity_index build them.)
-- Returns {"ok"}, {"fenced", partition, stored_offset}, or
-- {"duplicates", dedupe_key, event_id, dedupe_key, event_id, ...}.

local batch = cjson.decode(ARGV[1])

-- unpack() has a stack limit: call a variadic command in chunks.
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

local function add_counter(a, b)
  if #a <= 15 and #b <= 15 then
    return string.format('%.0f', tonumber(a) + tonumber(b))
  end
  return add_decimal(a, b)
end

local CELL = '^(%d+) (%d+) (%d+) (%d+) (%d+) (%d+)$'

-- The packed sum of a stored cell and an increment (both "e c i o l n"), or nil
-- when either is not six counters.
local function add_cells(stored, increment)
  local a1, a2, a3, a4, a5, a6 = string.match(stored, CELL)
  local b1, b2, b3, b4, b5, b6 = string.match(increment, CELL)
  if not a1 or not b1 then return nil end
  if #a1 <= 15 and #b1 <= 15 and #a2 <= 15 and #b2 <= 15 and #a3 <= 15 and #b3 <= 15 and
     #a4 <= 15 and #b4 <= 15 and #a5 <= 15 and #b5 <= 15 and #a6 <= 15 and #b6 <= 15 then
    -- The common case, in one format call: every sum stays below 2^53.
    return string.format('%.0f %.0f %.0f %.0f %.0f %.0f', tonumber(a1) + tonumber(b1), tonumber(a2) + tonumber(b2),
                         tonumber(a3) + tonumber(b3), tonumber(a4) + tonumber(b4), tonumber(a5) + tonumber(b5),
                         tonumber(a6) + tonumber(b6))
  end
  return add_counter(a1, b1) .. ' ' .. add_counter(a2, b2) .. ' ' .. add_counter(a3, b3) .. ' ' ..
         add_counter(a4, b4) .. ' ' .. add_counter(a5, b5) .. ' ' .. add_counter(a6, b6)
end

-- 1. The fence: each partition's batch must start where the last applied one ended.
local offsets_key = batch.offsets_key
local offset_args = {}
for _, range in ipairs(batch.ranges) do
  local partition, from_offset, to_offset = range[1], range[2], range[3]
  local stored = redis.call('HGET', offsets_key, partition)
  if stored and stored ~= from_offset then
    return {'fenced', partition, stored}
  end
  offset_args[#offset_args + 1] = partition
  offset_args[#offset_args + 1] = to_offset
end

-- 2. Dedupe: refuse the batch, naming every id already counted, so the caller
-- can drop them and resend. Nothing has been written yet.
local duplicates = {'duplicates'}
for _, entry in ipairs(batch.dedupe) do
  local key, ids = entry[1], entry[3]
  local i = 1
  while i <= #ids do
    local stop = math.min(i + 3999, #ids)
    local seen = redis.call('SMISMEMBER', key, unpack(ids, i, stop))
    for j = 1, #seen do
      if seen[j] == 1 then
        duplicates[#duplicates + 1] = key
        duplicates[#duplicates + 1] = ids[i + j - 1]
      end
    end
    i = stop + 1
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
    local stored = redis.call('HMGET', key, unpack(members))
    local args = {}
    for k = 1, #members do
      local increment = cells[i + 2 * k - 1]
      local value = increment
      if stored[k] then
        value = add_cells(stored[k], increment)
        if not value then
          return redis.error_reply('rollup cell ' .. key .. ' is not six counters: ' .. stored[k])
        end
      end
      args[#args + 1] = members[k]
      args[#args + 1] = value
    end
    cell_writes[#cell_writes + 1] = {key, args}
    i = stop + 1
  end
end

-- From here on the batch is accepted: write everything.
for _, entry in ipairs(batch.dedupe) do
  local key, expire_at, ids = entry[1], tonumber(entry[2]), entry[3]
  call_chunked('SADD', key, ids)
  if expire_at > 0 then redis.call('EXPIREAT', key, expire_at) end
end

for _, write in ipairs(cell_writes) do
  redis.call('HSET', write[1], unpack(write[2]))
end
for _, entry in ipairs(batch.hashes) do
  local expire_at = tonumber(entry[2])
  if expire_at > 0 then redis.call('EXPIREAT', entry[1], expire_at) end
end

for _, entry in ipairs(batch.zsets) do
  local key, expire_at, members = entry[1], tonumber(entry[2]), entry[3]
  for i = 1, #members, 2 do
    redis.call('ZINCRBY', key, members[i + 1], members[i])
  end
  if expire_at > 0 then redis.call('EXPIREAT', key, expire_at) end
end

for _, s in ipairs(batch.sessions) do
  local key, session_id = s[1], s[2]
  local index_key, type_index_prefix, entity_index_prefix = s[3], s[4], s[5]
  local entity_type, entity_id = s[6], s[7]
  local started_ms, ended_ms = s[8], s[9]
  local current = redis.call('HMGET', key, 'started_ms', 'ended_ms', 'entity_type', 'entity_id')
  if not current[1] then
    redis.call('HSET', key, 'entity_type', entity_type, 'entity_id', entity_id,
               'started_ms', started_ms, 'ended_ms', ended_ms)
  else
    if tonumber(started_ms) < tonumber(current[1]) then
      -- An earlier turn arrived late: it names the start and the entity.
      if current[3] ~= entity_type or current[4] ~= entity_id then
        redis.call('ZREM', type_index_prefix .. current[3], session_id)
        redis.call('ZREM', entity_index_prefix .. current[3] .. '\031' .. current[4], session_id)
      end
      redis.call('HSET', key, 'started_ms', started_ms, 'entity_type', entity_type, 'entity_id', entity_id)
    else
      entity_type, entity_id, started_ms = current[3], current[4], current[1]
    end
    if tonumber(ended_ms) > tonumber(current[2]) then
      redis.call('HSET', key, 'ended_ms', ended_ms)
    end
  end
  redis.call('HINCRBY', key, 'turns', s[10])
  redis.call('HINCRBY', key, 'cost', s[11])
  redis.call('HINCRBY', key, 'input', s[12])
  redis.call('HINCRBY', key, 'output', s[13])
  redis.call('ZADD', index_key, started_ms, session_id)
  redis.call('ZADD', type_index_prefix .. entity_type, started_ms, session_id)
  redis.call('ZADD', entity_index_prefix .. entity_type .. '\031' .. entity_id, started_ms, session_id)
end

for _, entry in ipairs(batch.sets) do
  call_chunked('SADD', entry[1], entry[2])
end

for _, key in ipairs(batch.versions) do
  redis.call('INCR', key)
end
for _, entry in ipairs(batch.bucket_versions) do
  local versions_key = entry[1]
  for _, field in ipairs(entry[2]) do
    redis.call('HINCRBY', versions_key, field, 1)
  end
end

if #offset_args > 0 then
  redis.call('HSET', offsets_key, unpack(offset_args))
end
return {'ok'}
