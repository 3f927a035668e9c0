-- One field of each of many hashes in one command, read-only (EVALSHA_RO).
-- KEYS: the hashes; ARGV: the field of each, in the same order (a member, or a member's
-- quarter-hour field: keys.quarter_member). Each reply is a one-element list, a missing
-- field's false a nil in it.
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.call('HMGET', key, ARGV[i])
end
return out
