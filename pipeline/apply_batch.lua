-- Applies one aggregator batch atomically: the fence on offsets, the dedupe
-- check, every rollup increment, leaderboards, sessions, and the new offsets.
-- Either all of it happens or none of it does (the script writes nothing
-- before its checks pass).
--
-- Money stays exact: increments arrive as decimal strings and go straight to
-- HINCRBY (int64); Lua numbers (doubles) never hold a counter.
--
-- ARGV, read in order by `pos`:
--   offsets_key, P, then P x (partition, from_offset, to_offset)
--   D, then D x (dedupe_key, expire_at, n, n x event_id)
--   H, then H x (hash_key, expire_at, n, n x (field, increment))
--   Z, then Z x (zset_key, expire_at, n, n x (member, increment))
--   S, then S x (session_key, session_id, index_key, type_index_prefix, entity_index_prefix,
--                entity_type, entity_id, started_ms, ended_ms, turns, cost, input, output)
--   (the per-type and per-entity index keys are prefix .. entity_type [.. US .. entity_id],
--    as KeyLayout.session_type_index and session_entity_index build them)
--   M, then M x (set_key, n, n x member)
-- Returns {"ok"}, {"fenced", partition, stored_offset}, or
-- {"duplicates", dedupe_key, event_id, dedupe_key, event_id, ...}.

local pos = 1
local function take()
  local value = ARGV[pos]
  pos = pos + 1
  return value
end

-- 1. The fence: each partition's batch must start where the last applied one ended.
local offsets_key = take()
local partitions = tonumber(take())
local offset_args = {}
for _ = 1, partitions do
  local partition, from_offset, to_offset = take(), take(), take()
  local stored = redis.call('HGET', offsets_key, partition)
  if stored and stored ~= from_offset then
    return {'fenced', partition, stored}
  end
  offset_args[#offset_args + 1] = partition
  offset_args[#offset_args + 1] = to_offset
end

-- 2. Dedupe: refuse the batch, naming every id already counted, so the caller
-- can drop them and resend. Nothing has been written yet.
local dedupe_count = tonumber(take())
local dedupe_start = pos
local duplicates = {'duplicates'}
for _ = 1, dedupe_count do
  local key, _expire, n = take(), take(), tonumber(take())
  local ids = {}
  for j = 1, n do ids[j] = ARGV[pos + j - 1] end
  pos = pos + n
  local seen = redis.call('SMISMEMBER', key, unpack(ids))
  for j = 1, n do
    if seen[j] == 1 then
      duplicates[#duplicates + 1] = key
      duplicates[#duplicates + 1] = ids[j]
    end
  end
end
if #duplicates > 1 then
  return duplicates
end

-- From here on the batch is accepted: write everything.
pos = dedupe_start
for _ = 1, dedupe_count do
  local key, expire_at, n = take(), tonumber(take()), tonumber(take())
  -- SADD in chunks: unpack() has a stack limit.
  local j = 0
  while j < n do
    local chunk = {}
    for c = 1, math.min(4000, n - j) do chunk[c] = ARGV[pos + j + c - 1] end
    redis.call('SADD', key, unpack(chunk))
    j = j + #chunk
  end
  pos = pos + n
  if expire_at > 0 then redis.call('EXPIREAT', key, expire_at) end
end

local hash_count = tonumber(take())
for _ = 1, hash_count do
  local key, expire_at, n = take(), tonumber(take()), tonumber(take())
  for _ = 1, n do
    redis.call('HINCRBY', key, take(), take())
  end
  if expire_at > 0 then redis.call('EXPIREAT', key, expire_at) end
end

local zset_count = tonumber(take())
for _ = 1, zset_count do
  local key, expire_at, n = take(), tonumber(take()), tonumber(take())
  for _ = 1, n do
    local member, increment = take(), take()
    redis.call('ZINCRBY', key, increment, member)
  end
  if expire_at > 0 then redis.call('EXPIREAT', key, expire_at) end
end

local session_count = tonumber(take())
for _ = 1, session_count do
  local key, session_id = take(), take()
  local index_key, type_index_prefix, entity_index_prefix = take(), take(), take()
  local entity_type, entity_id = take(), take()
  local started_ms, ended_ms = take(), take()
  local turns, cost, input, output = take(), take(), take(), take()
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
  redis.call('HINCRBY', key, 'turns', turns)
  redis.call('HINCRBY', key, 'cost', cost)
  redis.call('HINCRBY', key, 'input', input)
  redis.call('HINCRBY', key, 'output', output)
  redis.call('ZADD', index_key, started_ms, session_id)
  redis.call('ZADD', type_index_prefix .. entity_type, started_ms, session_id)
  redis.call('ZADD', entity_index_prefix .. entity_type .. '\031' .. entity_id, started_ms, session_id)
end

local set_count = tonumber(take())
for _ = 1, set_count do
  local key, n = take(), tonumber(take())
  for _ = 1, n do redis.call('SADD', key, take()) end
end

if #offset_args > 0 then
  redis.call('HSET', offsets_key, unpack(offset_args))
end
return {'ok'}
