-- SLIDING, for check.lua: a fast path on doubles and an exact one on bignums.

-- SLIDING with doubles, when every product is below 2^53 (see sliding()).
local function sliding_fast(limit, p, elapsed, previous, current, cost)
  local decayed = previous * (p - elapsed)
  local decayed_units = ceil_div(decayed, p)
  local function remaining(c)
    local r = limit - (c + decayed_units)
    return r > 0 and r or 0
  end
  local fits_now = current + cost <= limit
  if cost <= limit and fits_now and decayed <= (limit - current - cost) * p then
    return true, remaining(current + cost), current + cost
  end
  local retry = -1
  if cost <= limit then
    local wait
    if fits_now then
      local first = p - floor((limit - current - cost) * p / (previous > 0 and previous or 1))
      wait = first > elapsed and first - elapsed or 0
    else
      local first = p - floor((limit - cost) * p / (current > 0 and current or 1))
      wait = (p - elapsed) + first
    end
    retry = ceil_div(wait, 1000)
  end
  return false, remaining(current), retry
end

-- SLIDING with bignums, for any stored counts (each up to 2^64 - 1).
local function sliding_exact(limit, p, elapsed, previous_digits, current_digits, cost)
  local B = bignum()
  local bn, bn_add, bn_mul, bn_cmp, bn_number = B.bn, B.add, B.mul, B.cmp, B.number
  local bn_divmod, bn_ceil_div, bn_from_decimal = B.divmod, B.ceil_div, B.from_decimal
  local ONE = B.ONE
  local P = bn(p)
  local previous, current = bn_from_decimal(previous_digits), bn_from_decimal(current_digits)
  local decayed = bn_mul(previous, bn(p - elapsed))
  local decayed_units = bn_ceil_div(decayed, P)
  local LIMIT = bn(limit)
  local function remaining(c)
    local used = bn_add(c, decayed_units)
    if bn_cmp(used, LIMIT) >= 0 then
      return 0
    end
    return limit - bn_number(used)
  end
  local fits_now = bn_cmp(bn_add(current, bn(cost)), LIMIT) <= 0
  -- When it fits, current <= limit, so it is a number.
  local room = fits_now and limit - bn_number(current) - cost
  if cost <= limit and fits_now and bn_cmp(decayed, bn_mul(bn(room), P)) <= 0 then
    local spent = bn_number(current) + cost
    return true, remaining(bn(spent)), spent
  end
  local retry = -1
  if cost <= limit then
    -- Each quotient is below p, so a number.
    local wait
    if fits_now then
      local divisor = #previous > 0 and previous or ONE
      local first = p - bn_number((bn_divmod(bn_mul(bn(room), P), divisor)))
      wait = first > elapsed and first - elapsed or 0
    else
      local divisor = #current > 0 and current or ONE
      local first = p - bn_number((bn_divmod(bn_mul(bn(limit - cost), P), divisor)))
      wait = (p - elapsed) + first
    end
    retry = ceil_div(wait, 1000)
  end
  return false, remaining(current), retry
end

-- Mirrors sliding.rs. `state` holds canonical digit strings.
local function sliding(limit, period_ms, window_digits, previous_digits, current_digits, now_us,
                       cost, force_exact)
  local p = period_ms * 1000
  local window = floor(now_us / p)
  local elapsed = now_us - window * p
  local previous, current = '0', '0'
  if window_digits then
    -- A stored window of 2^53 or more is ahead of any clock.
    local stored = small(window_digits)
    if stored == window or stored == nil or stored > window then
      previous, current = previous_digits, current_digits
    elseif stored + 1 == window then
      previous, current = current_digits, '0'
    end
  end

  local previous_n, current_n = small(previous), small(current)
  local allowed, remaining, third
  if not force_exact and previous_n and current_n and current_n <= TWO52
    and previous_n * p < TWO53 and limit * p < TWO53 then
    allowed, remaining, third = sliding_fast(limit, p, elapsed, previous_n, current_n, cost)
  else
    allowed, remaining, third = sliding_exact(limit, p, elapsed, previous, current, cost)
  end

  local until_window_end = p - elapsed
  local spent = allowed and third or nil
  local has_current = spent and spent > 0 or (not allowed and current ~= '0')
  local reset
  if has_current then
    reset = ceil_div(until_window_end + p, 1000)
  elseif previous ~= '0' then
    reset = ceil_div(until_window_end, 1000)
  else
    reset = 0
  end
  if not allowed then
    return { 0, limit, remaining, reset, third }
  end
  local decision = { 1, limit, remaining, reset, 0 }
  if cost > 0 then
    local value = 's:' .. decimal(window) .. ':' .. previous .. ':' .. decimal(spent)
    return decision, value, (window + 2) * period_ms
  end
  return decision
end
