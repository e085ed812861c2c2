-- GCRA: gcra.rs, for the commands. An exact path on bignums serves every request; a fast path
-- on doubles serves plain decisions (no FORCE, no refund) when every value relative to now stays
-- below 2^52, and gives way to the exact path otherwise.

-- The arrival time's distance from now's floor on the 2^62 circle, as a signed bignum in
-- [-2^61, 2^61). `tat_plus_one` is the stored magnitude's digits.
local function gcra_distance(B, tat_plus_one, now_floor)
  local tat = B.sub(B.from_decimal(tat_plus_one), B.ONE)
  local d
  if B.cmp(tat, now_floor) >= 0 then
    d = B.sub(tat, now_floor)
  else
    d = B.sub(B.add(tat, B.TWO62), now_floor)
  end
  if B.cmp(d, B.TWO61) < 0 then
    return B.positive(d)
  end
  return B.negative(B.sub(B.TWO62, d))
end

-- GCRA with bignums, for every configuration and request: gcra.rs's Scaled step by step,
-- scaled by period_us and relative to now's floor. `op` is 'decide' (a request of `n`, forced
-- with `force`) or 'refund' (of `n`). Returns the decision and the change for 'decide', the units
-- given back and the change for 'refund'.
local function gcra_exact(limit, p, capacity, k, tat_plus_one, expire_at, now_us, op, n, force)
  local B = bignum()
  local bn, bn_add, bn_sub, bn_mul, bn_cmp, bn_number = B.bn, B.add, B.sub, B.mul, B.cmp, B.number
  local bn_divmod, bn_ceil_div, bn_mod62 = B.divmod, B.ceil_div, B.mod62
  local bn_decimal, bn_time_ms = B.decimal, B.time_ms
  local positive, negative, s_add, s_cmp = B.positive, B.negative, B.s_add, B.s_cmp
  local ZERO, ONE, TWO60 = B.ZERO, B.ONE, B.TWO60
  local K, P = bn(k), bn(p)
  local per_us = bn_mul(bn(limit), K)
  -- now in units = now_us * limit * K / p, as its floor modulo 2^62 and the rest (scaled).
  local whole, rest = bn_divmod(bn_mul(bn(now_us), bn(limit)), P)
  local rest_units, now = bn_divmod(bn_mul(rest, K), P)
  local now_floor = bn_mod62(bn_add(bn_mul(bn_mod62(whole), K), rest_units))

  local capacity_k = bn_mul(bn(capacity), K)
  -- gcra.rs's most_ahead: a debt can reach 2^60 units; a key without expiry is read as at most
  -- a full bucket spent.
  local most = bn_mul(expire_at and TWO60 or bn_add(capacity_k, ONE), P)
  -- b = max(tat, now) - now, the backlog.
  local b = ZERO
  if tat_plus_one then
    local d = gcra_distance(B, tat_plus_one, now_floor)
    local t = { n = d.n, m = bn_mul(d.m, P) }
    if expire_at and expire_at < MAX_TIME_MS then
      local until_us = s_add(positive(bn_mul(bn(expire_at), bn(1000))), negative(bn(now_us)))
      local far = positive(bn_add((bn_divmod(most, per_us)), ONE))
      local latest
      if s_cmp(until_us, far) > 0 then
        latest = positive(bn_add(most, per_us))
      elseif s_cmp(until_us, { n = true, m = far.m }) < 0 then
        latest = negative(bn_add(most, per_us))
      else
        latest = s_add({ n = until_us.n, m = bn_mul(until_us.m, per_us) }, positive(now))
      end
      local low = s_add(latest, negative(bn_mul(bn(EXPIRY_WINDOW_US), per_us)))
      if not (s_cmp(t, latest) <= 0 and s_cmp(t, low) > 0) then
        t = latest
      end
    end
    if s_cmp(t, positive(most)) > 0 then
      t = positive(most)
    end
    local ahead = s_add(t, negative(now))
    if not ahead.n then
      b = ahead.m
    end
  end

  local tolerance = bn_mul(capacity_k, P)
  local unit = bn_mul(K, P)
  local ms_divisor = bn_mul(per_us, bn(1000))
  local limit_ahead = bn_mul(TWO60, P)
  local function time_ms(x)
    if #x == 0 then
      return 0
    end
    return bn_time_ms(bn_ceil_div(x, ms_divisor))
  end
  local function remaining(x)
    if bn_cmp(x, tolerance) >= 0 then
      return 0
    end
    return bn_number((bn_divmod(bn_sub(tolerance, x), unit)))
  end
  -- `count` intervals, scaled, at most 2^60 units.
  local function spent_of(count)
    local units = bn_mul(bn(count), K)
    if bn_cmp(units, TWO60) > 0 then
      units = TWO60
    end
    return bn_mul(units, P)
  end
  -- The value and expiry of an arrival time `x` ahead of now, rounded up to a whole unit.
  local function stored(x)
    local whole_units = bn_ceil_div(bn_add(x, now), P)
    local full_in_us = bn_ceil_div(bn_sub(bn_mul(whole_units, P), now), per_us)
    local expire_ms = bn_time_ms(bn_ceil_div(bn_add(bn(now_us), full_in_us), bn(1000)))
    local tat = bn_mod62(bn_add(now_floor, whole_units))
    return '-' .. bn_decimal(bn_add(tat, ONE)), expire_ms
  end
  local function repair_change()
    if expire_at or not tat_plus_one then
      return nil
    end
    if #b == 0 then
      return { 'delete' }
    end
    local _, at = stored(b)
    return { 'expire', at }
  end

  if op == 'refund' then
    local moved = spent_of(n)
    if bn_cmp(moved, b) > 0 then
      moved = b
    end
    if #moved == 0 then
      return 0, repair_change()
    end
    local refunded = bn_number(bn_ceil_div(moved, unit))
    local left = bn_sub(b, moved)
    if #left == 0 then
      return refunded, { 'delete' }
    end
    local value, at = stored(left)
    return refunded, { 'store', value, at }
  end

  local spent = spent_of(n)
  local after = bn_add(b, spent)
  local fits = n <= capacity and bn_cmp(after, tolerance) <= 0
  local spends = n > 0 and (fits or force)
  local t = b
  if spends then
    t = bn_cmp(after, limit_ahead) > 0 and limit_ahead or after
  end
  local retry
  if fits then
    retry = 0
  elseif force then
    retry = time_ms(bn_sub(bn_add(t, unit), tolerance))
  elseif n <= capacity then
    retry = time_ms(bn_sub(after, tolerance))
  else
    retry = -1
  end
  local decision = { fits and 1 or 0, capacity, remaining(t), time_ms(t), retry }
  if spends then
    local value, at = stored(t)
    return decision, { 'store', value, at }
  end
  return decision, repair_change()
end

-- A plain decision (no FORCE) in exact-K mode, in units and with doubles: now is a whole number
-- of units and one microsecond is `c` units. The caller checked that the capacity's and the
-- cost's units stay below 2^52; this returns nil, before any side effect, whenever another value
-- relative to now would not (a debt, an expiry far away, a value read as beyond the range), and
-- the caller then takes the exact path.
local function gcra_fast(capacity, k, c, tat_plus_one, expire_at, now_us, cost)
  local capacity_k = capacity * k
  local now_floor = now_us * c
  local now_floor_bn = nil
  if now_floor >= TWO53 then
    local B = bignum()
    now_floor_bn = B.mod62(B.mul(B.bn(now_us), B.bn(c)))
  end
  local b = 0
  if tat_plus_one then
    -- The distance from now's floor to the stored tat; beyond 2^53 either way it is replaced by
    -- +-2^60, which compares the same with every value below.
    local t
    local tat = small(tat_plus_one)
    if tat and not now_floor_bn then
      t = tat - 1 - now_floor
    else
      local B = bignum()
      local d = gcra_distance(B, tat_plus_one, now_floor_bn or B.bn(now_floor))
      local magnitude = B.fits(d.m) and B.number(d.m) or FAR
      t = d.n and -magnitude or magnitude
    end
    if expire_at and expire_at < MAX_TIME_MS then
      local latest = (expire_at * 1000 - now_us) * c
      if latest >= TWO52 or latest <= -TWO52 then
        return nil
      end
      if not (t <= latest and t > latest - EXPIRY_WINDOW_US * c) then
        t = latest
      end
    end
    local most = expire_at and FAR or capacity_k + 1
    if t > most then
      t = most
    end
    if t > 0 then
      b = t
    end
    if b >= TWO52 then
      return nil
    end
  end
  local function remaining(x)
    return x < capacity_k and floor((capacity_k - x) / k) or 0
  end
  local function time_ms(units)
    if units <= 0 then
      return 0
    end
    local ms = ceil_div(ceil_div(units, c), 1000)
    return ms < MAX_TIME_MS and ms or MAX_TIME_MS
  end
  local function expiry(units)
    local ms = ceil_div(now_us + ceil_div(units, c), 1000)
    return ms < MAX_TIME_MS and ms or MAX_TIME_MS
  end
  local function repair_change()
    if expire_at or not tat_plus_one then
      return nil
    end
    if b == 0 then
      return { 'delete' }
    end
    return { 'expire', expiry(b) }
  end
  if cost > capacity or b + cost * k > capacity_k then
    local retry = cost > capacity and -1 or time_ms(b + cost * k - capacity_k)
    return { 0, capacity, remaining(b), time_ms(b), retry }, repair_change()
  end
  local after = b + cost * k
  local decision = { 1, capacity, remaining(after), time_ms(after), 0 }
  if cost == 0 then
    return decision, repair_change()
  end
  local value
  if not now_floor_bn and now_floor + after + 1 < TWO53 then
    value = decimal(now_floor + after + 1)
  else
    local B = bignum()
    local tat = B.mod62(B.add(now_floor_bn or B.bn(now_floor), B.bn(after)))
    value = B.decimal(B.add(tat, B.ONE))
  end
  return decision, { 'store', '-' .. value, expiry(after) }
end

-- Mirrors gcra.rs: `op` and `n` as gcra_exact's. Takes the fast path when it is exact.
local function gcra(limit, period_ms, capacity, tat_plus_one, expire_at, now_us, op, n, force,
                    force_exact)
  local p = period_ms * 1000
  local g = gcd(limit, p)
  local exact_k = p / g
  local span = capacity + 1
  -- K = p / g unless (burst + 1) * K would exceed 2^60; the double product is exact below 2^53
  -- and rounds monotonically, so only a product that rounds to 2^60 itself needs a bignum.
  local product = span * exact_k
  local lowered
  if product == FAR then
    local B = bignum()
    lowered = B.cmp(B.mul(B.bn(span), B.bn(exact_k)), B.TWO60) > 0
  else
    lowered = product > FAR
  end
  local k = exact_k
  if lowered then
    local B = bignum()
    k = B.number((B.divmod(B.TWO60, B.bn(span))))
  elseif op == 'decide' and not force and not force_exact then
    -- One microsecond is limit / g whole units: now has no fractional part.
    local c = limit / g
    local spend = n < capacity and n or capacity
    local bound = (capacity + spend) * k + EXPIRY_WINDOW_US * c + 1
    if bound < TWO52 and now_us + bound < TWO53
      and (not expire_at or expire_at >= MAX_TIME_MS or expire_at < 9007199254740) then
      local decision, change = gcra_fast(capacity, k, c, tat_plus_one, expire_at, now_us, n)
      if decision then
        return decision, change
      end
    end
  end
  return gcra_exact(limit, p, capacity, k, tat_plus_one, expire_at, now_us, op, n, force)
end
