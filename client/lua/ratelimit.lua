-- redis-ratelimit's Lua fallback: the RATELIMIT.* commands as one script, for servers without
-- the module. It gives the module's decisions, replies and errors, and reads and writes the same
-- keys, so that a deployment can switch between the module and this script without resetting
-- anyone's limits, and clients in any language can share limits with those using the module.
-- It runs on Redis 6.2, 7.x and Valkey 8.
--
-- Load it once and call it by its SHA1 (clients reload it on NOSCRIPT):
--
--   $ redis-cli SCRIPT LOAD "$(cat ratelimit.lua)"
--   "<sha1>"
--   $ redis-cli EVALSHA <sha1> 1 rl:user42 check FIXED 10 60000 0 1 0
--
-- ARGV[1] names the command; the others are positional, with periods in milliseconds (see each
-- command below). The caller validates the numbers as the module would (limit and burst 1 to
-- 10^15, cost 0 to 10^15, period 1 ms to 3650 days); the script assumes they are valid.
--
-- This file is generated: it is the parts listed in bundle.txt, concatenated in that order by
-- `make lua`. Edit the parts, not this file.

-- Shared helpers of the redis-ratelimit Lua fallback: constants, exact arithmetic on doubles,
-- and the storage format's decoder.
--
-- The script users load is ratelimit.lua, the concatenation of the parts listed in bundle.txt,
-- in that order (`make lua` writes it; a test checks it is up to date). Each part only defines
-- locals that the later parts use; main.lua, last, dispatches on ARGV[1].
--
-- Lua 5.1 numbers are doubles, exact for integers below 2^53. Every value that can exceed that
-- (SLIDING's products, GCRA's units and its stored arrival time modulo 2^62, stored counts up to
-- 2^64 - 1) goes through bignum.lua, so the results are bit-identical to ratelimit_core's u128
-- arithmetic. The fast paths use plain doubles only when every intermediate provably stays
-- below 2^53.

local floor = math.floor
local format = string.format

local TWO52 = 4503599627370496
local TWO53 = 9007199254740992
-- Stands for any distance of 2^53 or more: exact as a double and beyond every other value.
local FAR = 1152921504606846976
-- ratelimit_core::MAX_TIME_MS, the longest time any reply or expiry reports.
local MAX_TIME_MS = 9007199254740991

-- How far before the key's expiry a GCRA arrival time may lie and still be trusted, in
-- microseconds (gcra.rs's stored_tat): the expiry is the arrival time rounded up to the
-- microsecond, then to the millisecond. check.lua widens it by a second where the expiry can only
-- be read through PTTL (Redis 6.2), which is a few milliseconds late under load.
local expiry_window_us = 1001

local I64_MAX = '9223372036854775807'
local U64_MAX = '18446744073709551615'
local TWO62_DECIMAL = '4611686018427387904'

local NOT_A_LIMITER = 'ERR the key holds a value that is not a rate limiter state'

-- An integer below 2^53 as a decimal string: no exponent, no ".0".
local function decimal(x)
  return format('%.0f', x)
end

-- ceil(a / b) for integers 0 <= a < 2^53, b >= 1. A double quotient of such integers never
-- rounds up across an integer, so its floor is exact; the product check makes that explicit.
local function ceil_div(a, b)
  local q = floor(a / b)
  if q * b < a then
    q = q + 1
  end
  return q
end

local function gcd(a, b)
  while b ~= 0 do
    a, b = b, a % b
  end
  return a
end

-- Digit strings --------------------------------------------------------------------------------

-- Whether canonical digit strings compare a <= b (byte order, not the server's locale).
local function decimal_le(a, b)
  local n = #a
  if n ~= #b then
    return n < #b
  end
  if n <= 15 then
    return tonumber(a) <= tonumber(b)
  end
  local high_a, high_b = tonumber(a:sub(1, n - 10)), tonumber(b:sub(1, n - 10))
  if high_a ~= high_b then
    return high_a < high_b
  end
  return tonumber(a:sub(n - 9)) <= tonumber(b:sub(n - 9))
end

-- Mirrors ratelimit_core::parse::integer_in(text, 0, max): 1 to 20 ASCII digits, leading zeros
-- allowed, at most `max`. Returns the canonical digits (no leading zeros), or nil.
local function canonical(text, max)
  if #text == 0 or #text > 20 or text:find('[^0-9]') then
    return nil
  end
  local digits = text:match('^0*(%d.*)$')
  if not decimal_le(digits, max) then
    return nil
  end
  return digits
end

-- A canonical digit string as a number if it is below 2^53, else nil.
local function small(digits)
  if #digits <= 15 then
    return tonumber(digits)
  end
  if #digits == 16 then
    local x = tonumber(digits)
    if x < TWO53 then
      return x
    end
  end
  return nil
end

-- Mirrors ratelimit_core::State::decode. Returns the algorithm's name and its fields as
-- canonical digit strings: 'FIXED', count | 'SLIDING', window, previous, current |
-- 'GCRA', tat + 1. Returns nil for a value that is no limiter state.
local function decode(value)
  if value:sub(1, 2) == 's:' then
    local window, previous, current = value:match('^s:([^:]*):([^:]*):([^:]*)$')
    if not window then
      return nil
    end
    window, previous, current =
      canonical(window, U64_MAX), canonical(previous, U64_MAX), canonical(current, U64_MAX)
    if not (window and previous and current) then
      return nil
    end
    return 'SLIDING', window, previous, current
  end
  if value:sub(1, 1) == '-' then
    local magnitude = canonical(value:sub(2), TWO62_DECIMAL)
    if not magnitude or magnitude == '0' then
      return nil
    end
    return 'GCRA', magnitude
  end
  local count = canonical(value, I64_MAX)
  if not count then
    return nil
  end
  return 'FIXED', count
end

-- Reading a key --------------------------------------------------------------------------------

-- GET that returns the error table (WRONGTYPE) instead of raising it, so that the script replies
-- the server's own message, exactly as the module does.
local function get_value(key)
  return redis.pcall('GET', key)
end
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
-- FIXED, for check.lua.

-- Mirrors fixed.rs. `count` is a canonical digit string or nil; `window_end` the key's absolute
-- expiry in ms, or nil without one.
local function fixed(limit, period_ms, count_digits, window_end, now_us, cost)
  local now_ms = floor(now_us / 1000)
  local fresh_end = now_ms + period_ms
  local count, ends = 0, fresh_end
  if count_digits then
    -- Any count of 2^53 or more behaves like every count above 2 * 10^15: never fits.
    count = small(count_digits) or TWO53
    if window_end == nil then
      ends = fresh_end
    elseif window_end > now_ms then
      ends = window_end
    else
      count = 0
    end
  end
  local until_end = ends - now_ms
  if count + cost > limit then
    local remaining = limit - count
    return {
      0,
      limit,
      remaining > 0 and remaining or 0,
      count > 0 and until_end or 0,
      cost > limit and -1 or until_end,
    }
  end
  count = count + cost
  local decision = { 1, limit, limit - count, count > 0 and until_end or 0, 0 }
  if cost > 0 then
    return decision, decimal(count), ends
  end
  return decision
end
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
-- check and quota: RATELIMIT.CHECK and RATELIMIT.QUOTA without the module.
--
-- ARGV: check|quota, algorithm (FIXED, SLIDING or GCRA), limit, period in ms, burst (0 means
-- limit; ignored by FIXED and SLIDING), cost, flags (1 = DRYRUN; quota is always a dry run),
-- then for tests only the clock in microseconds and 1 to force the bignum path.
--
-- The caller validates the numbers (ratelimit_core::Limit); the script assumes they are valid.
-- An admitted request with a cost above zero that is no dry run writes
-- SET key value PXAT expire_at_ms, which effects replication sends to replicas and the AOF.
local function check(keys, argv, dry_run)
  local key = keys[1]
  local algorithm = string.upper(argv[2])
  local limit = tonumber(argv[3])
  local period_ms = tonumber(argv[4])
  local burst = tonumber(argv[5] or '0')
  local cost = tonumber(argv[6] or '1')
  local flags = tonumber(argv[7] or '0')
  if burst == 0 then
    burst = limit
  end
  if flags % 2 == 1 then
    dry_run = true
  end
  local record, err = read_limiter(key, algorithm)
  if not record then
    return err
  end
  local now_us = read_clock(argv[8], { record })
  local decision, new_value, expire_at_ms =
    decide_limiter(record, algorithm, limit, period_ms, burst, now_us, cost, argv[9] == '1')
  if new_value and not dry_run then
    redis.call('SET', key, new_value, 'PXAT', decimal(expire_at_ms))
  end
  return decision
end
-- reset: RATELIMIT.RESET without the module. ARGV: reset.
--
-- Replies 1 after deleting a limiter state of any algorithm, 0 when the key is absent, the
-- module's not-a-limiter error for any other string and WRONGTYPE for another type; nothing is
-- deleted then. The DEL is replicated as an effect.
local function reset(keys)
  local key = keys[1]
  local value = get_value(key)
  if type(value) == 'table' then
    return value
  end
  if not value then
    return 0
  end
  if not decode(value) then
    return { err = NOT_A_LIMITER }
  end
  redis.call('DEL', key)
  return 1
end
-- The entry point: ARGV[1] names the command, in any letter case; each command's file documents
-- its arguments.

-- Redis 6.2 replicates scripts verbatim unless asked for effects, and refuses writes after TIME
-- without it; 7.0 always replicates effects and keeps the function only as a no-op.
if redis.replicate_commands then
  redis.replicate_commands()
end

local commands = {
  check = function(keys, argv) return check(keys, argv, false) end,
  quota = function(keys, argv) return check(keys, argv, true) end,
  reset = reset,
}

local name = ARGV[1]
local command = name and commands[string.lower(name)]
if not command then
  -- Echoed as the module echoes arguments: printable ASCII only, at most 64 bytes.
  local echo = tostring(name):sub(1, 64):gsub('[^ -~]', '?')
  return { err = "ERR unknown ratelimit script command '" .. echo ..
    "': expected check, quota or reset" }
end
return command(KEYS, ARGV)
