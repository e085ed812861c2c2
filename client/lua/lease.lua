-- acquire and release: RATELIMIT.ACQUIRE and RATELIMIT.RELEASE, concurrency leases in a sorted
-- set (member = lease ID, score = its absolute expiry in Unix ms), as ratelimit_core::lease and
-- the module's leases.rs: expired leases (score <= now) are removed first, and the key expires
-- with its latest lease. Effects replicate as ZREM, ZADD and PEXPIREAT.
--
-- ARGV of acquire: acquire, limit (1 to 10^6), lease in ms, the lease ID (empty to have one made:
-- the clock in microseconds, or `<clock>-<n>` when that one is live), then for tests only the
-- clock in microseconds. Replies {allowed, limit, remaining, reset_after_ms, retry_after_ms, id},
-- the ID false (nil) when denied.
--
-- ARGV of release: release, the lease ID, then for tests only the clock. Replies 1 if it released
-- a live lease, 0 otherwise.

local WRONGTYPE = 'WRONGTYPE Operation against a key holding the wrong kind of value'

-- The lease set's key: a record with its expiry, as read_limiter's, or nil and WRONGTYPE.
local function read_leases(key)
  local kind = redis.call('TYPE', key)
  kind = type(kind) == 'table' and kind.ok or kind
  if kind ~= 'none' and kind ~= 'zset' then
    return nil, { err = WRONGTYPE }
  end
  local record = { key = key, found = kind == 'zset' }
  if record.found then
    local at = redis.pcall('PEXPIRETIME', key)
    if type(at) == 'table' then
      local ttl = redis.call('PTTL', key)
      if ttl >= 0 then
        record.ttl = ttl
      end
    elseif at >= 0 then
      record.expire_at = at
    end
  end
  return record
end

-- A score as whole milliseconds, rounded up, at most 2^53 - 1 (`inf` among the larger), as
-- leases.rs's score_ms.
local function score_ms(text)
  local score = tonumber(text)
  if score <= 0 then
    return 0
  end
  if score >= 9007199254740991 then
    return 9007199254740991
  end
  return math.ceil(score)
end

-- Removes the leases expired at `now_ms`, in batches small enough for unpack. Returns whether
-- the set is now empty (and so deleted, with its expiry).
local function remove_expired(key, now_ms)
  local expired = redis.call('ZRANGEBYSCORE', key, '-inf', decimal(now_ms))
  for first = 1, #expired, 1000 do
    local last = first + 999 < #expired and first + 999 or #expired
    redis.call('ZREM', key, unpack(expired, first, last))
  end
  return #expired > 0 and redis.call('ZCARD', key) == 0
end

-- The live leases: their count, earliest and latest expiry, and the one before the latest.
local function live_leases(key)
  local count = redis.call('ZCARD', key)
  if count == 0 then
    return 0
  end
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  local last = redis.call('ZRANGE', key, -2, -1, 'WITHSCORES')
  local latest, second = score_ms(last[#last]), nil
  if #last == 4 then
    second = score_ms(last[2])
  end
  return count, score_ms(first[2]), latest, second
end

-- Gives the key the expiry of its latest lease when it has another one (`current`, nil for
-- none), as leases.rs's expire_with_latest.
local function expire_with_latest(key, current)
  if redis.call('ZCARD', key) == 0 then
    return
  end
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  local latest = score_ms(last[2])
  if current ~= latest then
    redis.call('PEXPIREAT', key, decimal(latest))
  end
end

-- The module's error for a lease ID that is not 1 to 128 bytes, or nil: the ID echoed as the
-- module echoes arguments (printable ASCII, others as '?', cut after 64 bytes with '...').
local function invalid_id(id)
  if #id >= 1 and #id <= 128 then
    return nil
  end
  local shown = (id:sub(1, 64):gsub('[^\32-\126]', '?'))
  if #id > 64 then
    shown = shown .. '...'
  end
  return { err = "ERR invalid lease ID '" .. shown .. "': expected 1 to 128 bytes" }
end

local function acquire(keys, argv)
  local key = keys[1]
  local limit, lease_ms = tonumber(argv[2]), tonumber(argv[3])
  local id = argv[4]
  if id == '' then
    id = nil
  else
    local invalid = invalid_id(id)
    if invalid then
      return invalid
    end
  end
  local record, err = read_leases(key)
  if not record then
    return err
  end
  local now_us = read_clock(argv[5], { record })
  local now_ms = floor(now_us / 1000)
  local current = record.expire_at
  if record.found and remove_expired(key, now_ms) then
    current = nil
  end
  local count, earliest, latest, second = live_leases(key)
  local holder, others
  if id and count > 0 then
    local score = redis.call('ZSCORE', key, id)
    if score then
      holder = score_ms(score)
      -- Not `holder == latest and second or latest`: `second` may be nil.
      if holder == latest then
        others = second
      else
        others = latest
      end
    end
  end
  local expire_at = now_ms + lease_ms
  local grant, live_after = false, count
  if holder then
    grant = true
  elseif count < limit then
    grant, live_after, others = true, count + 1, latest
  end
  local latest_after = latest
  if grant then
    latest_after = (others and others > expire_at) and others or expire_at
  end
  local remaining = limit - live_after
  local decision = {
    grant and 1 or 0,
    limit,
    remaining > 0 and remaining or 0,
    latest_after and (latest_after > now_ms and latest_after - now_ms or 0) or 0,
    grant and 0 or (earliest and earliest - now_ms or -1),
  }
  if grant then
    if not id then
      local base = decimal(now_us)
      id = base
      local n = 2
      while redis.call('ZSCORE', key, id) do
        id = base .. '-' .. n
        n = n + 1
      end
    end
    redis.call('ZADD', key, decimal(expire_at), id)
    decision[6] = id
  else
    decision[6] = false
  end
  expire_with_latest(key, current)
  return decision
end

local function release(keys, argv)
  local key = keys[1]
  local invalid = invalid_id(argv[2])
  if invalid then
    return invalid
  end
  local record, err = read_leases(key)
  if not record then
    return err
  end
  if not record.found then
    return 0
  end
  local now_ms = floor(read_clock(argv[3], { record }) / 1000)
  local current = record.expire_at
  if remove_expired(key, now_ms) then
    return 0
  end
  local released = redis.call('ZREM', key, argv[2])
  expire_with_latest(key, current)
  return released
end
