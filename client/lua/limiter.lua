-- Reading a limiter's key and the server's clock, and deciding on it: what every command shares.

-- The error of a key holding a `found` limiter read for `algorithm` (nil: any), or nil.
local function wrong_algorithm(found, algorithm)
  if found and algorithm and found ~= algorithm then
    return { err = 'ERR the key holds a ' .. found .. ' limiter, not ' .. algorithm }
  end
end

-- The key's value, decoded and checked against the algorithm the caller expects, with its
-- expiry. Returns a record { found = algorithm or nil when the key is absent, a, b, c = the
-- decoded fields, expire_at or ttl }, or nil and the error reply (WRONGTYPE, not a limiter,
-- another algorithm; `algorithm` nil accepts any).
--
-- PEXPIRETIME (7.0+) reads the expiry exactly. 6.2 only has PTTL, kept in `ttl` and made absolute
-- by `read_clock`.
local function read_limiter(key, algorithm)
  local value = get_value(key)
  if type(value) == 'table' then
    return nil, value
  end
  local record = { key = key }
  if not value then
    return record
  end
  local found, a, b, c = decode(value)
  if not found then
    return nil, { err = NOT_A_LIMITER }
  end
  local wrong = wrong_algorithm(found, algorithm)
  if wrong then
    return nil, wrong
  end
  record.found, record.a, record.b, record.c = found, a, b, c
  local at = redis.pcall('PEXPIRETIME', key)
  if type(at) == 'table' then
    local ttl = redis.call('PTTL', key)
    if ttl >= 0 then
      record.ttl = ttl
    end
  elseif at >= 0 then
    record.expire_at = at
  end
  return record
end

-- The clock of one command, read once: microseconds since the epoch.
--
-- The module reads the clock with RedisModule_CachedMicroseconds where the server has it
-- (Redis 7.2+ and Valkey) and in whole milliseconds before; the script does the same, so that
-- both see the same instants and a key can pass from one to the other within a millisecond.
-- `test_clock`, for tests only, replaces the server's time in the decisions.
--
-- The records read before with a PTTL get their absolute expiry. PTTL counts from the server's
-- millisecond at the call; read before and after TIME, the same PTTL twice proves that the
-- millisecond did not change in between, so TIME's millisecond plus the PTTL is the expiry
-- exactly. Otherwise it is read again (a millisecond boundary is crossed at most once in a few
-- microseconds).
local function read_clock(test_clock, records)
  local time, server_us
  for _ = 1, 8 do
    time = redis.call('TIME')
    server_us = tonumber(time[1]) * 1000000 + tonumber(time[2])
    local settled = true
    for _, record in ipairs(records) do
      if record.ttl then
        local again = redis.call('PTTL', record.key)
        if again ~= record.ttl then
          record.ttl = again
          settled = false
        end
      end
    end
    if settled then
      break
    end
  end
  for _, record in ipairs(records) do
    if record.ttl and record.ttl >= 0 then
      record.expire_at = floor(server_us / 1000) + record.ttl
    end
    record.ttl = nil
  end
  if test_clock and test_clock ~= '' then
    return tonumber(test_clock)
  end
  local now_us = server_us
  local version = redis.REDIS_VERSION_NUM
  if not version or version < 0x070200 then
    now_us = now_us - now_us % 1000
  end
  return now_us
end

-- One policy: the algorithm (upper case), the limit, the period in ms and the burst (0 for the
-- limit), from four ARGV entries starting at `i`.
local function read_policy(argv, i)
  local policy = {
    algorithm = string.upper(argv[i]),
    limit = tonumber(argv[i + 1]),
    period_ms = tonumber(argv[i + 2]),
    burst = tonumber(argv[i + 3] or '0'),
  }
  if policy.burst == 0 or policy.algorithm ~= 'GCRA' then
    policy.burst = policy.limit
  end
  return policy
end

-- Decides a request of `cost` (forced with `force`) on a limiter read by `read_limiter`.
-- Returns the five-integer decision, the change, and the window.
local function decide_limiter(record, policy, now_us, cost, force, force_exact)
  local algorithm = policy.algorithm
  if algorithm == 'FIXED' then
    return fixed(policy.limit, policy.period_ms, record.a, record.expire_at, now_us, cost, force)
  elseif algorithm == 'SLIDING' then
    return sliding(policy.limit, policy.period_ms, record, now_us, cost, force, force_exact)
  end
  local decision, change = gcra(policy.limit, policy.period_ms, policy.burst, record.a,
    record.expire_at, now_us, 'decide', cost, force, force_exact)
  return decision, change, 0
end

-- The standing now, as ratelimit_core::quota: what is left with nothing spent, and whether a
-- request of `cost` fits.
local function standing(record, policy, now_us, cost, force_exact)
  local now = decide_limiter(record, policy, now_us, 0, false, force_exact)
  local asked = decide_limiter(record, policy, now_us, cost, false, force_exact)
  return { asked[1], now[2], now[3], now[4], asked[5] }
end

-- The record a read of the key would find after `change`.
local function record_after(record, change)
  if not change then
    return record
  end
  local kind = change[1]
  if kind == 'delete' then
    return { key = record.key }
  end
  if kind == 'expire' then
    record.expire_at = change[2]
    return record
  end
  local found, a, b, c = decode(change[2])
  return { key = record.key, found = found, a = a, b = b, c = c, expire_at = change[3] }
end
