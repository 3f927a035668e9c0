-- One request's key check, in one atomic call: the key's record, then its token bucket.
--
-- KEYS: [1] the key's record (KeyLayout.api_key), [2] its token bucket (KeyLayout.api_key_rate).
-- ARGV: [1] tokens added per second (0: no rate limit), [2] the bucket's size (the burst).
--
-- Returns {"unknown"}, {"revoked"} or {"expired"} for a key that may not be used: such a
-- request takes no token. Else {"ok", id, project, name, entity_type, entity_id, expires_ms,
-- key_hash, retry_after_ms}, where retry_after_ms is 0 when a token was taken, and otherwise
-- how long until the bucket holds one again (the request is refused, and took nothing).
--
-- The clock is Redis's own, so every API process shares one, and a key expires for all of them
-- at the same instant.
local record = redis.call('HMGET', KEYS[1],
  'id', 'project', 'name', 'entity_type', 'entity_id', 'expires_ms', 'revoked_at', 'key_hash',
  'restricted_project')
-- A scoped or expiring key keeps its project as restricted_project (stores/apikeys.py).
if (not record[2] or record[2] == '') and record[9] then record[2] = record[9] end
if not record[2] or record[2] == '' then return {'unknown'} end
if record[7] and record[7] ~= '' then return {'revoked'} end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
if record[6] and record[6] ~= '' and now >= tonumber(record[6]) then return {'expired'} end

local retry_after = 0
local rate = tonumber(ARGV[1])
if rate > 0 then
  local burst = tonumber(ARGV[2])
  local state = redis.call('HMGET', KEYS[2], 'tokens', 'ms')
  local tokens = tonumber(state[1]) or burst
  local last = tonumber(state[2]) or now
  if now > last then tokens = math.min(burst, tokens + (now - last) * rate / 1000) end
  if tokens >= 1 then
    tokens = tokens - 1
  else
    retry_after = math.ceil((1 - tokens) * 1000 / rate)
  end
  redis.call('HSET', KEYS[2], 'tokens', string.format('%.6f', tokens), 'ms', string.format('%d', math.max(now, last)))
  -- A full bucket is the same as none: let it go once it would have refilled.
  redis.call('PEXPIRE', KEYS[2], math.ceil(burst * 1000 / rate) + 1000)
end
return {'ok', record[1], record[2], record[3] or '', record[4] or '', record[5] or '',
  record[6] or '', record[8] or '', string.format('%d', retry_after)}
