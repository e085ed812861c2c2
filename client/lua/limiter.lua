-- Reading a limiter's key and the server's clock, shared by the commands.

-- The key's value, decoded and checked against the algorithm the caller expects, with its
-- absolute expiry (FIXED's window end, GCRA's arrival time to the millisecond). Returns a record
-- { found = algorithm or nil when the key is absent, a, b, c = the decoded fields, expire_at or
-- ttl }, or nil and the error reply (WRONGTYPE, not a limiter, another algorithm).
--
-- PEXPIRETIME (7.0+) reads the expiry exactly. 6.2 only has PTTL, which is kept in `ttl` and
-- turned into an absolute time by `read_clock`: the PTTL is read before TIME, so that a
-- millisecond boundary crossed in between moves the expiry later (toward denial), not earlier.
local function read_limiter(key, algorithm)
  local value = get_value(key)
  if type(value) == 'table' then
    return nil, value
  end
  local record = {}
  if not value then
    return record
  end
  local found, a, b, c = decode(value)
  if not found then
    return nil, { err = NOT_A_LIMITER }
  end
  if found ~= algorithm then
    return nil, { err = 'ERR the key holds a ' .. found .. ' limiter, not ' .. algorithm }
  end
  record.found, record.a, record.b, record.c = found, a, b, c
  if found == 'FIXED' or found == 'GCRA' then
    local at = redis.pcall('PEXPIRETIME', key)
    if type(at) == 'table' then
      local ttl = redis.call('PTTL', key)
      if ttl >= 0 then
        record.ttl = ttl
      end
      expiry_window_us = 1001001
    elseif at >= 0 then
      record.expire_at = at
    end
  end
  return record
end

-- The clock of one command, read once: microseconds since the epoch, and the server's own time.
--
-- The module reads the clock with RedisModule_CachedMicroseconds where the server has it
-- (Redis 7.2+ and Valkey) and in whole milliseconds before; the script does the same, so that
-- both see the same instants and a key can pass from one to the other within a millisecond.
-- `test_clock`, for tests only, replaces the server's time in the decisions; PTTL still counts
-- from the server's own clock. The records read before are given their absolute expiries.
local function read_clock(test_clock, records)
  local time = redis.call('TIME')
  local server_us = tonumber(time[1]) * 1000000 + tonumber(time[2])
  local now_us
  if test_clock and test_clock ~= '' then
    now_us = tonumber(test_clock)
  else
    now_us = server_us
    local version = redis.REDIS_VERSION_NUM
    if not version or version < 0x070200 then
      now_us = now_us - now_us % 1000
    end
  end
  for _, record in ipairs(records) do
    if record.ttl then
      record.expire_at = floor(server_us / 1000) + record.ttl
    end
  end
  return now_us
end

-- Decides one request of `cost` on a limiter read by `read_limiter`. Returns the five-integer
-- decision, and for an admitted request with a cost above zero, the value to store and its
-- absolute expiry in ms.
local function decide_limiter(record, algorithm, limit, period_ms, burst, now_us, cost,
                              force_exact)
  local a, b, c = record.a, record.b, record.c
  if algorithm == 'FIXED' then
    return fixed(limit, period_ms, a, record.expire_at, now_us, cost)
  elseif algorithm == 'SLIDING' then
    return sliding(limit, period_ms, a, b, c, now_us, cost, force_exact)
  end
  return gcra(limit, period_ms, burst, a, record.expire_at, now_us, cost, force_exact)
end
