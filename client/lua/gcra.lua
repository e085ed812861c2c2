-- GCRA, for check.lua: a fast path on doubles and an exact one on bignums.

-- GCRA in exact-K mode, in units and with doubles: now is a whole number of units
-- (now_rest = 0) and one microsecond is `c` units. The caller checked that every value relative
-- to now stays below 2^52; only now's floor and the stored tat, which are absolute (modulo
-- 2^62), may need a bignum. Returns nil, before any side effect, in the one case where a double
-- would not be exact (an expiry far in the past); the caller then takes the bignum path.
local function gcra_fast(capacity, k, c, tat_plus_one, expire_at, now_us, cost)
  local capacity_k = capacity * k
  local most = capacity_k + 1
  local now_floor = now_us * c
  local now_floor_bn = nil
  if now_floor >= TWO53 then
    local B = bignum()
    now_floor_bn = B.mod62(B.mul(B.bn(now_us), B.bn(c)))
  end
  local backlog = 0
  if tat_plus_one then
    -- The distance from now's floor to the stored tat on the 2^62 circle. Beyond 2^53 either
    -- way it is replaced by +-2^60, which compares the same with every value below.
    local t
    local tat = small(tat_plus_one)
    if tat and not now_floor_bn then
      t = tat - 1 - now_floor
    else
      local B = bignum()
      local tat_bn = B.sub(B.from_decimal(tat_plus_one), B.ONE)
      local nf = now_floor_bn or B.bn(now_floor)
      local d
      if B.cmp(tat_bn, nf) >= 0 then
        d = B.sub(tat_bn, nf)
      else
        d = B.sub(B.add(tat_bn, B.TWO62), nf)
      end
      if B.cmp(d, B.TWO61) < 0 then
        t = B.fits(d) and B.number(d) or FAR
      else
        d = B.sub(B.TWO62, d)
        t = B.fits(d) and -B.number(d) or -FAR
      end
    end
    -- gcra.rs's stored_tat: trust the value only if it agrees with the key's expiry.
    if expire_at and expire_at < MAX_TIME_MS then
      local until_us = expire_at * 1000 - now_us
      local latest
      if until_us > floor(most / c) + 1 then
        latest = most + c
      else
        latest = until_us * c
        if latest <= -TWO52 then
          return nil
        end
      end
      if not (t <= latest and t > latest - expiry_window_us * c) then
        t = latest
      end
    end
    if t > most then
      t = most
    end
    if t > 0 then
      backlog = t
    end
  end
  local function remaining(b)
    return b < capacity_k and floor((capacity_k - b) / k) or 0
  end
  local function time_ms(units)
    if units <= 0 then
      return 0
    end
    local ms = ceil_div(ceil_div(units, c), 1000)
    return ms < MAX_TIME_MS and ms or MAX_TIME_MS
  end
  if cost > capacity or backlog + cost * k > capacity_k then
    local retry = cost > capacity and -1 or time_ms(backlog + cost * k - capacity_k)
    return { 0, capacity, remaining(backlog), time_ms(backlog), retry }
  end
  local after = backlog + cost * k
  local decision = { 1, capacity, remaining(after), time_ms(after), 0 }
  if cost == 0 then
    return decision
  end
  local expire_ms = ceil_div(now_us + ceil_div(after, c), 1000)
  expire_ms = expire_ms < MAX_TIME_MS and expire_ms or MAX_TIME_MS
  local value
  if not now_floor_bn and now_floor + after + 1 < TWO53 then
    value = decimal(now_floor + after + 1)
  else
    local B = bignum()
    local tat = B.mod62(B.add(now_floor_bn or B.bn(now_floor), B.bn(after)))
    value = B.decimal(B.add(tat, B.ONE))
  end
  return decision, '-' .. value, expire_ms
end

-- GCRA with bignums, for every configuration: gcra.rs step by step, scaled by period_us and
-- relative to now's floor.
local function gcra_exact(limit, p, capacity, k, tat_plus_one, expire_at, now_us, cost)
  local B = bignum()
  local bn, bn_add, bn_sub, bn_mul, bn_cmp, bn_number = B.bn, B.add, B.sub, B.mul, B.cmp, B.number
  local bn_divmod, bn_ceil_div, bn_mod62 = B.divmod, B.ceil_div, B.mod62
  local bn_from_decimal, bn_decimal, bn_time_ms = B.from_decimal, B.decimal, B.time_ms
  local positive, negative, s_add, s_cmp = B.positive, B.negative, B.s_add, B.s_cmp
  local ZERO, ONE, TWO61, TWO62 = B.ZERO, B.ONE, B.TWO61, B.TWO62
  local K, P = bn(k), bn(p)
  local per_us = bn_mul(bn(limit), K)
  -- now in units = now_us * limit * K / p, as its floor modulo 2^62 and the rest (scaled).
  local whole, rest = bn_divmod(bn_mul(bn(now_us), bn(limit)), P)
  local rest_units, now = bn_divmod(bn_mul(rest, K), P)
  local now_floor = bn_mod62(bn_add(bn_mul(bn_mod62(whole), K), rest_units))

  local capacity_k = bn_mul(bn(capacity), K)
  local most = bn_mul(bn_add(capacity_k, ONE), P)
  -- backlog = max(tat, now) - now.
  local backlog = ZERO
  if tat_plus_one then
    -- The distance from now_floor to the stored tat on the 2^62 circle, in [-2^61, 2^61).
    local tat = bn_sub(bn_from_decimal(tat_plus_one), ONE)
    local d
    if bn_cmp(tat, now_floor) >= 0 then
      d = bn_sub(tat, now_floor)
    else
      d = bn_sub(bn_add(tat, TWO62), now_floor)
    end
    if bn_cmp(d, TWO61) < 0 then
      d = positive(d)
    else
      d = negative(bn_sub(TWO62, d))
    end
    local t = { n = d.n, m = bn_mul(d.m, P) }
    if expire_at and expire_at < MAX_TIME_MS then
      local until_us = s_add(positive(bn_mul(bn(expire_at), bn(1000))), negative(bn(now_us)))
      local latest
      if s_cmp(until_us, positive(bn_add((bn_divmod(most, per_us)), ONE))) > 0 then
        latest = positive(bn_add(most, per_us))
      else
        latest = s_add({ n = until_us.n, m = bn_mul(until_us.m, per_us) }, positive(now))
      end
      local low = s_add(latest, negative(bn_mul(bn(expiry_window_us), per_us)))
      if not (s_cmp(t, latest) <= 0 and s_cmp(t, low) > 0) then
        t = latest
      end
    end
    if s_cmp(t, positive(most)) > 0 then
      t = positive(most)
    end
    local ahead = s_add(t, negative(now))
    if not ahead.n then
      backlog = ahead.m
    end
  end

  local tolerance = bn_mul(capacity_k, P)
  local unit = bn_mul(K, P)
  local function remaining(b)
    if bn_cmp(b, tolerance) >= 0 then
      return 0
    end
    return bn_number((bn_divmod(bn_sub(tolerance, b), unit)))
  end
  local ms_divisor = bn_mul(per_us, bn(1000))
  local function time_ms(scaled)
    if #scaled == 0 then
      return 0
    end
    return bn_time_ms(bn_ceil_div(scaled, ms_divisor))
  end
  local after = bn_add(backlog, bn_mul(bn(cost), unit))
  if cost > capacity or bn_cmp(after, tolerance) > 0 then
    local retry = cost > capacity and -1 or time_ms(bn_sub(after, tolerance))
    return { 0, capacity, remaining(backlog), time_ms(backlog), retry }
  end
  local decision = { 1, capacity, remaining(after), time_ms(after), 0 }
  if cost == 0 then
    return decision
  end
  -- The stored tat, rounded up to a whole unit.
  local stored = bn_ceil_div(bn_add(after, now), P)
  local full_in_us = bn_ceil_div(bn_sub(bn_mul(stored, P), now), per_us)
  local expire_ms = bn_time_ms(bn_ceil_div(bn_add(bn(now_us), full_in_us), bn(1000)))
  local tat = bn_mod62(bn_add(now_floor, stored))
  return decision, '-' .. bn_decimal(bn_add(tat, ONE)), expire_ms
end

-- Mirrors gcra.rs, choosing the fast path when it is exact.
local function gcra(limit, period_ms, capacity, tat_plus_one, expire_at, now_us, cost,
                    force_exact)
  local p = period_ms * 1000
  local g = gcd(limit, p)
  local exact_k = p / g
  local span = capacity + 1
  -- K = p / g unless (burst + 1) * K would exceed 2^60; the double product is exact below 2^53
  -- and rounds monotonically, so only a product that rounds to 2^60 itself needs a bignum.
  local product = span * exact_k
  local lowered
  if product == 1152921504606846976 then
    local B = bignum()
    lowered = B.cmp(B.mul(B.bn(span), B.bn(exact_k)), B.TWO60) > 0
  else
    lowered = product > 1152921504606846976
  end
  local k = exact_k
  if lowered then
    local B = bignum()
    k = B.number((B.divmod(B.TWO60, B.bn(span))))
  elseif not force_exact then
    -- One microsecond is limit / g whole units: now has no fractional part.
    local c = limit / g
    local spend = cost < capacity and cost or capacity
    local bound = (capacity + spend) * k + expiry_window_us * c + 1
    if bound < TWO52 and now_us + bound < TWO53
      and (not expire_at or expire_at >= MAX_TIME_MS or expire_at < 9007199254740) then
      local decision, value, expire_ms =
        gcra_fast(capacity, k, c, tat_plus_one, expire_at, now_us, cost)
      if decision then
        return decision, value, expire_ms
      end
    end
  end
  return gcra_exact(limit, p, capacity, k, tat_plus_one, expire_at, now_us, cost)
end
