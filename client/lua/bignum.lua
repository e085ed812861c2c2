-- Exact non-negative integers of any size, and the few signed operations GCRA needs.
--
-- Non-negative integers as little-endian arrays of base-2^24 limbs without leading zero limbs;
-- zero is {}. Limb products stay below 2^48 and every sum below 2^53, so each step is exact.
-- Values are never modified after they are built.
--
-- The library is built on first use: most requests never need it, and creating its closures
-- on every call would cost a few microseconds.

local bignum_library = nil

local function bignum()
  if bignum_library then
    return bignum_library
  end
  local BASE = 16777216
  local HALF_BASE = 8388608

  local function trim(r)
    local n = #r
    while n > 0 and r[n] == 0 do
      r[n] = nil
      n = n - 1
    end
    return r
  end

  -- From an integer 0 <= x < 2^53.
  local function bn(x)
    local r, n = {}, 0
    while x > 0 do
      local high = floor(x / BASE)
      n = n + 1
      r[n] = x - high * BASE
      x = high
    end
    return r
  end

  local ZERO = {}
  local ONE = bn(1)
  local TWO60 = { 0, 0, 4096 }
  local TWO61 = { 0, 0, 8192 }
  local TWO62 = { 0, 0, 16384 }

  -- Whether a < 2^53, so that bn_number(a) is exact.
  local function bn_fits(a)
    local n = #a
    return n < 3 or (n == 3 and a[3] < 32)
  end

  local function bn_number(a)
    local x = 0
    for i = #a, 1, -1 do
      x = x * BASE + a[i]
    end
    return x
  end

  local function bn_cmp(a, b)
    local na, nb = #a, #b
    if na ~= nb then
      return na < nb and -1 or 1
    end
    for i = na, 1, -1 do
      local x, y = a[i], b[i]
      if x ~= y then
        return x < y and -1 or 1
      end
    end
    return 0
  end

  local function bn_add(a, b)
    local r, carry = {}, 0
    local n = #a > #b and #a or #b
    for i = 1, n do
      local s = (a[i] or 0) + (b[i] or 0) + carry
      if s >= BASE then
        r[i] = s - BASE
        carry = 1
      else
        r[i] = s
        carry = 0
      end
    end
    if carry > 0 then
      r[n + 1] = carry
    end
    return r
  end

  -- a - b, for a >= b.
  local function bn_sub(a, b)
    local r, borrow = {}, 0
    for i = 1, #a do
      local s = a[i] - (b[i] or 0) - borrow
      if s < 0 then
        r[i] = s + BASE
        borrow = 1
      else
        r[i] = s
        borrow = 0
      end
    end
    return trim(r)
  end

  local function bn_mul(a, b)
    local na, nb = #a, #b
    if na == 0 or nb == 0 then
      return {}
    end
    local r = {}
    for i = 1, na + nb do
      r[i] = 0
    end
    for i = 1, na do
      local ai, carry = a[i], 0
      if ai ~= 0 then
        for j = 1, nb do
          local t = r[i + j - 1] + ai * b[j] + carry
          carry = floor(t / BASE)
          r[i + j - 1] = t - carry * BASE
        end
      end
      r[i + nb] = carry
    end
    return trim(r)
  end

  -- Quotient and remainder (a number) by 1 <= d <= 2^29, so that every step stays below 2^53.
  local function bn_divmod_small(a, d)
    local q, r = {}, 0
    for i = #a, 1, -1 do
      local current = r * BASE + a[i]
      local digit = floor(current / d)
      q[i] = digit
      r = current - digit * d
    end
    return trim(q), r
  end

  -- Quotient and remainder of u by v >= 1: Knuth's algorithm D (TAOCP 4.3.1), as in Hacker's
  -- Delight's divmnu, in base 2^24.
  local function bn_divmod(u, v)
    local n = #v
    if bn_cmp(u, v) < 0 then
      return {}, u
    end
    if n == 1 then
      local q, r = bn_divmod_small(u, v[1])
      return q, bn(r)
    end
    local m = #u
    -- Normalize: scale both by f = 2^s so that the divisor's top limb is at least BASE / 2.
    local f, top = 1, v[n]
    while top < HALF_BASE do
      top = top * 2
      f = f * 2
    end
    local vn, un, carry = {}, {}, 0
    for i = 1, n do
      local t = v[i] * f + carry
      carry = floor(t / BASE)
      vn[i] = t - carry * BASE
    end
    carry = 0
    for i = 1, m do
      local t = u[i] * f + carry
      carry = floor(t / BASE)
      un[i] = t - carry * BASE
    end
    un[m + 1] = carry
    local q = {}
    local v_top, v_next = vn[n], vn[n - 1]
    for j = m - n, 0, -1 do
      local numerator = un[j + n + 1] * BASE + un[j + n]
      local qhat = floor(numerator / v_top)
      local rhat = numerator - qhat * v_top
      while qhat >= BASE or qhat * v_next > rhat * BASE + un[j + n - 1] do
        qhat = qhat - 1
        rhat = rhat + v_top
        if rhat >= BASE then
          break
        end
      end
      local k = 0
      for i = 1, n do
        local p = qhat * vn[i]
        local p_high = floor(p / BASE)
        local t = un[i + j] - k - (p - p_high * BASE)
        local borrow = floor(t / BASE)
        un[i + j] = t - borrow * BASE
        k = p_high - borrow
      end
      local t = un[j + n + 1] - k
      if t < 0 then
        -- qhat was one too large: add the divisor back.
        qhat = qhat - 1
        local c = 0
        for i = 1, n do
          local s = un[i + j] + vn[i] + c
          if s >= BASE then
            un[i + j] = s - BASE
            c = 1
          else
            un[i + j] = s
            c = 0
          end
        end
        t = t + c
      end
      un[j + n + 1] = t
      q[j + 1] = qhat
    end
    local r, shift = {}, BASE / f
    for i = 1, n do
      local next_limb = i < n and un[i + 1] or 0
      r[i] = floor(un[i] / f) + (next_limb % f) * shift
    end
    return trim(q), trim(r)
  end

  -- ceil(a / b).
  local function bn_ceil_div(a, b)
    local q, r = bn_divmod(a, b)
    if #r > 0 then
      q = bn_add(q, ONE)
    end
    return q
  end

  -- a modulo 2^62 (limbs 1 and 2 hold 48 bits, limb 3 the next 14).
  local function bn_mod62(a)
    local r = { a[1], a[2], a[3] }
    if r[3] then
      r[3] = r[3] % 16384
    end
    return trim(r)
  end

  local E15 = bn(1e15)

  -- From canonical decimal digits.
  local function bn_from_decimal(digits)
    local n = #digits
    if n <= 15 then
      return bn(tonumber(digits))
    end
    local first = n % 15
    if first == 0 then
      first = 15
    end
    local r = bn(tonumber(digits:sub(1, first)))
    for i = first + 1, n, 15 do
      r = bn_add(bn_mul(r, E15), bn(tonumber(digits:sub(i, i + 14))))
    end
    return r
  end

  local function bn_decimal(a)
    if bn_fits(a) then
      return decimal(bn_number(a))
    end
    local groups, r = {}, nil
    while #a > 0 do
      a, r = bn_divmod_small(a, 1000000)
      groups[#groups + 1] = r
    end
    local parts = { decimal(groups[#groups]) }
    for i = #groups - 1, 1, -1 do
      parts[#parts + 1] = format('%06d', groups[i])
    end
    return table.concat(parts)
  end

  -- A time in milliseconds, capped at MAX_TIME_MS.
  local function bn_time_ms(a)
    if bn_fits(a) then
      local x = bn_number(a)
      return x < MAX_TIME_MS and x or MAX_TIME_MS
    end
    return MAX_TIME_MS
  end

  -- Signed bignums, only for GCRA's stored arrival time: { n = negative, m = magnitude }, with
  -- zero never negative.
  local function positive(m)
    return { n = false, m = m }
  end

  local function negative(m)
    return { n = #m > 0, m = m }
  end

  local function s_add(a, b)
    if a.n == b.n then
      return { n = a.n, m = bn_add(a.m, b.m) }
    end
    local c = bn_cmp(a.m, b.m)
    if c == 0 then
      return positive({})
    elseif c > 0 then
      return { n = a.n, m = bn_sub(a.m, b.m) }
    end
    return { n = b.n, m = bn_sub(b.m, a.m) }
  end

  local function s_cmp(a, b)
    if a.n ~= b.n then
      return a.n and -1 or 1
    end
    local c = bn_cmp(a.m, b.m)
    return a.n and -c or c
  end

  bignum_library = {
    bn = bn,
    fits = bn_fits,
    number = bn_number,
    cmp = bn_cmp,
    add = bn_add,
    sub = bn_sub,
    mul = bn_mul,
    divmod = bn_divmod,
    ceil_div = bn_ceil_div,
    mod62 = bn_mod62,
    from_decimal = bn_from_decimal,
    decimal = bn_decimal,
    time_ms = bn_time_ms,
    positive = positive,
    negative = negative,
    s_add = s_add,
    s_cmp = s_cmp,
    ZERO = ZERO,
    ONE = ONE,
    TWO60 = TWO60,
    TWO61 = TWO61,
    TWO62 = TWO62,
  }
  return bignum_library
end
