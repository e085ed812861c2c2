-- RATELIMIT.CHECK without the module: the same decisions, replies, errors and stored values as
-- ratelimit_core::decide and the module's store, so that a deployment can switch between the
-- module and this script without resetting anyone's limits. Runs on Redis 6.2, 7.x and Valkey.
--
-- KEYS[1]  the limiter's key
-- ARGV[1]  algorithm: FIXED, SLIDING or GCRA
-- ARGV[2]  limit, 1 to 10^15
-- ARGV[3]  period in milliseconds, 1 to 3650 days
-- ARGV[4]  burst for GCRA; 0 or absent means limit; ignored by the other algorithms
-- ARGV[5]  cost, 0 to 10^15; absent means 1
-- ARGV[6]  1 for a dry run (RATELIMIT.QUOTA is cost 1 with a dry run), else 0
-- ARGV[7]  tests only: the clock in microseconds since the epoch; empty or absent means TIME
-- ARGV[8]  tests only: 1 to take the bignum path even where the double fast path applies
--
-- The caller validates the numbers (ratelimit_core::Limit); the script assumes they are valid.
-- Replies {allowed, limit, remaining, reset_after_ms, retry_after_ms}, or the module's error.
-- An admitted request with a cost above zero that is no dry run writes
-- SET key value PXAT expire_at_ms, which effects replication sends to replicas and the AOF.
--
-- Runs after lib.lua, bignum.lua, fixed.lua, sliding.lua and gcra.lua, which define the locals
-- used here.

local key = KEYS[1]
local algorithm = string.upper(ARGV[1])
local limit = tonumber(ARGV[2])
local period_ms = tonumber(ARGV[3])
local burst = tonumber(ARGV[4] or '0')
local cost = tonumber(ARGV[5] or '1')
local dry_run = ARGV[6] == '1'
local clock = ARGV[7]
local force_exact = ARGV[8] == '1'
if burst == 0 then
  burst = limit
end

-- Redis 6.2 replicates scripts verbatim unless asked for effects, and refuses writes after TIME
-- without it; 7.0 always replicates effects and keeps the function only as a no-op.
if redis.replicate_commands then
  redis.replicate_commands()
end

local value = get_value(key)
if type(value) == 'table' then
  return value
end
local found, a, b, c
if value then
  found, a, b, c = decode(value)
  if not found then
    return { err = NOT_A_LIMITER }
  end
  if found ~= algorithm then
    return { err = 'ERR the key holds a ' .. found .. ' limiter, not ' .. algorithm }
  end
end

-- The key's absolute expiry: FIXED's window end, and GCRA's arrival time to the millisecond.
-- PEXPIRETIME (7.0+) reads it exactly; 6.2 only has PTTL, read before TIME so that a
-- millisecond boundary crossed in between moves the expiry later (toward denial), not earlier.
local expire_at = nil
local relative_ttl = nil
if found == 'FIXED' or found == 'GCRA' then
  local at = redis.pcall('PEXPIRETIME', key)
  if type(at) == 'table' then
    relative_ttl = redis.call('PTTL', key)
    if relative_ttl < 0 then
      relative_ttl = nil
    end
    expiry_window_us = 1001001
  elseif at >= 0 then
    expire_at = at
  end
end

-- The module reads the clock with RedisModule_CachedMicroseconds where the server has it
-- (Redis 7.2+ and Valkey) and in whole milliseconds before; the script does the same, so that
-- both see the same instants and a key can pass from one to the other within a millisecond.
local time = redis.call('TIME')
local server_us = tonumber(time[1]) * 1000000 + tonumber(time[2])
local now_us
if clock and clock ~= '' then
  now_us = tonumber(clock)
else
  now_us = server_us
  local version = redis.REDIS_VERSION_NUM
  if not version or version < 0x070200 then
    now_us = now_us - now_us % 1000
  end
end
-- PTTL counts from the server's own clock, even when a test clock decides.
if relative_ttl then
  expire_at = floor(server_us / 1000) + relative_ttl
end

local decision, new_value, expire_at_ms
if algorithm == 'FIXED' then
  decision, new_value, expire_at_ms = fixed(limit, period_ms, a, expire_at, now_us, cost)
elseif algorithm == 'SLIDING' then
  decision, new_value, expire_at_ms =
    sliding(limit, period_ms, a, b, c, now_us, cost, force_exact)
else
  decision, new_value, expire_at_ms =
    gcra(limit, period_ms, burst, a, expire_at, now_us, cost, force_exact)
end

if new_value and not dry_run then
  redis.call('SET', key, new_value, 'PXAT', decimal(expire_at_ms))
end
return decision
