-- SLIDING: sliding.rs, for the commands. Counts are numbers below 2^53 (stored counts above
-- read as MAX_STORED); products of a count by the period go through bignums when a double could
-- round them.

-- How sliding.rs reads a stored state in the current `window`: 'windows', previous, current,
-- and for a key without expiry the expiry its window implies; or 'held', previous, current and
-- the key's expiry, for counts written under another period.
local function sliding_read(period_ms, window, now_ms, window_digits, previous_digits,
                            current_digits, expire_at)
  if not window_digits then
    return 'windows', 0, 0, nil
  end
  local previous = small(previous_digits) or MAX_STORED
  local current = small(current_digits) or MAX_STORED
  local stored = small(window_digits)
  if expire_at then
    -- Written under this period only if the expiry is (window + 2) * period exactly.
    local consistent
    if stored and (stored + 2) * period_ms < TWO53 then
      consistent = expire_at == (stored + 2) * period_ms
    elseif expire_at < TWO53 then
      local B = bignum()
      local expected = B.mul(B.add(B.from_decimal(window_digits), B.bn(2)), B.bn(period_ms))
      consistent = B.cmp(expected, B.bn(expire_at)) == 0
    else
      consistent = false
    end
    if not consistent then
      if expire_at > now_ms then
        return 'held', previous, current, expire_at
      end
      return 'windows', 0, 0, nil
    end
  end
  local implied = nil
  if not expire_at then
    local base = (stored and stored < window) and stored or window
    implied = (base + 2) * period_ms
  end
  if stored == window then
    return 'windows', previous, current, implied
  elseif stored and stored + 1 == window then
    return 'windows', current, 0, implied
  elseif not stored or stored > window then
    -- Ahead of the clock: the clock went back. Keep the counts.
    return 'windows', previous, current, implied
  end
  return 'windows', 0, 0, implied
end

-- Whether doubles are exact for these numbers: every product by the period is below 2^53.
local function sliding_small(p, ...)
  for _, x in ipairs({ ... }) do
    if x * p >= TWO53 then
      return false
    end
  end
  return true
end

-- floor(a * b / d) for numbers below 2^53 whose result is below 2^53.
local function mul_div(a, b, d, exact)
  if not exact then
    return floor(a * b / d)
  end
  local B = bignum()
  return B.number((B.divmod(B.mul(B.bn(a), B.bn(b)), B.bn(d))))
end

-- Whether `cost` fits: previous * (p - elapsed) <= (limit - current - cost) * p.
local function sliding_fits(limit, p, elapsed, previous, current, cost, exact)
  if cost > limit or current > limit - cost then
    return false
  end
  local room = limit - current - cost
  if not exact then
    return previous * (p - elapsed) <= room * p
  end
  local B = bignum()
  return B.cmp(B.mul(B.bn(previous), B.bn(p - elapsed)), B.mul(B.bn(room), B.bn(p))) <= 0
end

-- sliding.rs's retry_after_us: microseconds until `cost` (at most `limit`) fits.
local function sliding_wait(limit, p, elapsed, previous, current, cost, exact)
  if current <= limit - cost then
    local room = limit - current - cost
    local first = p - mul_div(room, p, previous > 0 and previous or 1, exact)
    return first > elapsed and first - elapsed or 0
  end
  local first = p - mul_div(limit - cost, p, current > 0 and current or 1, exact)
  return (p - elapsed) + first
end

-- sliding.rs's Instant::decision, for counts that include what the request spent.
local function sliding_decision(limit, p, elapsed, previous, current, cost, fits, force, exact)
  local decayed_units
  if exact then
    local B = bignum()
    decayed_units = B.number(B.ceil_div(B.mul(B.bn(previous), B.bn(p - elapsed)), B.bn(p)))
  else
    decayed_units = ceil_div(previous * (p - elapsed), p)
  end
  local remaining = limit - current - decayed_units
  local until_end = p - elapsed
  local reset = 0
  if current > 0 then
    reset = ceil_div(until_end + p, 1000)
  elseif previous > 0 then
    reset = ceil_div(until_end, 1000)
  end
  local retry
  if fits then
    retry = 0
  elseif force or cost <= limit then
    local wait = sliding_wait(limit, p, elapsed, previous, current, force and 1 or cost, exact)
    retry = ceil_div(wait, 1000)
  else
    retry = -1
  end
  return { fits and 1 or 0, limit, remaining > 0 and remaining or 0, reset, retry }
end

local function sliding_store(period_ms, window, previous, current)
  local value = 's:' .. decimal(window) .. ':' .. decimal(previous) .. ':' .. decimal(current)
  return { 'store', value, (window + 2) * period_ms }
end

-- Decides a request of `cost`, spending it even when it does not fit with `force`. Returns the
-- five-integer decision, the change, and the window (its index).
local function sliding(limit, period_ms, state, now_us, cost, force, force_exact)
  local p = period_ms * 1000
  local window = floor(now_us / p)
  local elapsed = now_us - window * p
  local now_ms = floor(now_us / 1000)
  local kind, previous, current, extra =
    sliding_read(period_ms, window, now_ms, state.a, state.b, state.c, state.expire_at)
  local fits
  if kind == 'held' then
    fits = previous <= limit and current <= limit - previous and cost <= limit - previous - current
  else
    local exact = force_exact or not sliding_small(p, previous, current, limit, cost)
    fits = sliding_fits(limit, p, elapsed, previous, current, cost, exact)
  end
  local spends = cost > 0 and (fits or force)
  if spends then
    if kind == 'held' then
      -- Held counts are stored again as the current window's, on this period.
      current = previous + current
      previous = 0
    end
    current = current + cost
    if current > MAX_STORED then
      current = MAX_STORED
    end
    local exact = force_exact or not sliding_small(p, previous, current, limit)
    local decision =
      sliding_decision(limit, p, elapsed, previous, current, cost, fits, force, exact)
    return decision, sliding_store(period_ms, window, previous, current), window
  end
  if kind == 'windows' then
    local exact = force_exact or not sliding_small(p, previous, current, limit)
    local decision =
      sliding_decision(limit, p, elapsed, previous, current, cost, fits, force, exact)
    return decision, repair(extra, now_ms), window
  end
  -- Held counts: in full until the key's expiry, as a FIXED window counts them.
  local until_end = extra - now_ms
  local retry = -1
  if fits then
    retry = 0
  elseif force or cost <= limit then
    retry = until_end
  end
  local remaining = limit - previous - current
  local held = previous > 0 or current > 0
  local decision = {
    fits and 1 or 0, limit, remaining > 0 and remaining or 0, held and until_end or 0, retry,
  }
  return decision, nil, window
end

-- Gives back up to `amount` to the window `target` (nil for the current one, false for one too
-- large to be any). Returns the units given back and the change.
local function sliding_refund(period_ms, state, now_us, amount, target)
  local p = period_ms * 1000
  local window = floor(now_us / p)
  local now_ms = floor(now_us / 1000)
  local kind, previous, current, extra =
    sliding_read(period_ms, window, now_ms, state.a, state.b, state.c, state.expire_at)
  if kind == 'held' then
    return 0, nil
  end
  local refunded
  if target == nil or target == window then
    refunded = amount < current and amount or current
    current = current - refunded
  elseif target and target + 1 == window then
    refunded = amount < previous and amount or previous
    previous = previous - refunded
  else
    return 0, repair(extra, now_ms)
  end
  if refunded == 0 then
    return 0, repair(extra, now_ms)
  end
  if previous == 0 and current == 0 then
    return refunded, { 'delete' }
  end
  return refunded, sliding_store(period_ms, window, previous, current)
end
