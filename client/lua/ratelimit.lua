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
-- ratelimit_core::MAX_STORED_COUNT: FIXED and SLIDING counts saturate here, and larger stored
-- counts read as this one.
local MAX_STORED = 9007199254740991

-- How far before the key's expiry a GCRA arrival time may lie and still be trusted, in
-- microseconds (gcra.rs's stored_tat): the expiry is the arrival time rounded up to the
-- microsecond, then to the millisecond.
local EXPIRY_WINDOW_US = 1001

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

-- Mirrors ratelimit_core::parse::canonical_u64, bounded by `max`: canonical digits, as INCR
-- reads a value (`0`, or no leading zero; no sign, no space), at most `max`. Returns the digits,
-- or nil.
local function canonical(text, max)
  if #text == 0 or #text > 20 or text:find('[^0-9]') then
    return nil
  end
  if #text > 1 and text:sub(1, 1) == '0' then
    return nil
  end
  if not decimal_le(text, max) then
    return nil
  end
  return text
end

-- A canonical digit string as a number if it is below 2^53, else nil: a count read this way is
-- `small(digits) or MAX_STORED`.
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

-- Changes to a key ----------------------------------------------------------------------------

-- ratelimit_core::Change, as the algorithms return it: nil (keep), { 'store', value, at_ms },
-- { 'expire', at_ms } for a key found without expiry, or { 'delete' }. The writes are replicated
-- as effects (SET ... PXAT, PEXPIREAT, DEL), as the module replicates them.
local function apply_change(key, change)
  if not change then
    return
  end
  local kind = change[1]
  if kind == 'store' then
    redis.call('SET', key, change[2], 'PXAT', decimal(change[3]))
  elseif kind == 'expire' then
    redis.call('PEXPIREAT', key, decimal(change[2]))
  else
    redis.call('DEL', key)
  end
end

-- The change a key without expiry needs when nothing else is written: the expiry its state
-- implies (`implied`, in ms, nil for a key that has one), or its deletion when that is past.
local function repair(implied, now_ms)
  if not implied then
    return nil
  end
  if implied > now_ms then
    return { 'expire', implied }
  end
  return { 'delete' }
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
-- FIXED: fixed.rs, for the commands.

-- The state as fixed.rs reads it: the count (at most MAX_STORED), the window's end, and whether
-- the key has no expiry (its window then starts now). `count_digits` is nil for no key.
local function fixed_read(period_ms, count_digits, window_end, now_ms)
  local fresh_end = now_ms + period_ms
  if not count_digits then
    return 0, fresh_end, false
  end
  local count = small(count_digits) or MAX_STORED
  if window_end == nil then
    return count, fresh_end, true
  end
  if window_end > now_ms then
    return count, window_end, false
  end
  return 0, fresh_end, false
end

-- Decides a request of `cost`, spending it even when it does not fit with `force`. Returns the
-- five-integer decision, the change, and the window (its end).
local function fixed(limit, period_ms, count_digits, window_end, now_us, cost, force)
  local now_ms = floor(now_us / 1000)
  local count, ends, without_expiry = fixed_read(period_ms, count_digits, window_end, now_ms)
  local until_end = ends - now_ms
  local fits = count <= limit and cost <= limit - count
  local spends = cost > 0 and (fits or force)
  if spends then
    count = count + cost
    if count > MAX_STORED then
      count = MAX_STORED
    end
  end
  local retry
  if fits then
    retry = 0
  elseif force or cost <= limit then
    retry = until_end
  else
    retry = -1
  end
  local remaining = limit - count
  local decision = {
    fits and 1 or 0,
    limit,
    remaining > 0 and remaining or 0,
    count > 0 and until_end or 0,
    retry,
  }
  local change
  if spends then
    change = { 'store', decimal(count), ends }
  elseif without_expiry then
    change = { 'expire', ends }
  end
  return decision, change, ends
end

-- Gives back up to `amount`, only to the window ending at `target` when there is one (`target`
-- is then a number, or false for a window too large to be any). Returns the units given back and
-- the change.
local function fixed_refund(period_ms, count_digits, window_end, now_us, amount, target)
  local count, ends, without_expiry =
    fixed_read(period_ms, count_digits, window_end, floor(now_us / 1000))
  local refunded = 0
  if target == nil or target == ends then
    refunded = amount < count and amount or count
  end
  if refunded == 0 then
    return 0, without_expiry and { 'expire', ends } or nil
  end
  if refunded == count then
    return refunded, { 'delete' }
  end
  return refunded, { 'store', decimal(count - refunded), ends }
end
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
-- check and quota: RATELIMIT.CHECK and RATELIMIT.QUOTA.
--
-- ARGV: check|quota, algorithm (FIXED, SLIDING or GCRA), limit, period in ms, burst (0 means
-- the limit; ignored by FIXED and SLIDING), cost, flags (the sum of 1 = DRYRUN, 2 = FORCE,
-- 4 = WITHWINDOW; quota takes none), then for tests only the clock in microseconds and 1 to force
-- the bignum path.
--
-- check replies the five integers of RATELIMIT.CHECK (six with WITHWINDOW) and, unless it is a
-- dry run, makes the change: SET key value PXAT expire_at_ms for a spent cost, PEXPIREAT for a key
-- found without expiry. quota replies the standing now, as RATELIMIT.QUOTA, and writes nothing.
local function check(keys, argv, quota)
  local key = keys[1]
  local policy = read_policy(argv, 2)
  local cost = tonumber(argv[6] or '1')
  local flags = tonumber(argv[7] or '0')
  local dry_run = quota or flags % 2 == 1
  local force = floor(flags / 2) % 2 == 1
  local with_window = floor(flags / 4) % 2 == 1
  local force_exact = argv[9] == '1'
  local record, err = read_limiter(key, policy.algorithm)
  if not record then
    return err
  end
  local now_us = read_clock(argv[8], { record })
  if quota then
    return standing(record, policy, now_us, cost, force_exact)
  end
  local decision, change, window = decide_limiter(record, policy, now_us, cost, force, force_exact)
  if not dry_run then
    apply_change(key, change)
  end
  if with_window then
    decision[6] = window
  end
  return decision
end
-- mcheck: RATELIMIT.MCHECK, one request against several limiters, all or nothing.
--
-- KEYS: the limiters' keys (all in one slot in a cluster). ARGV: mcheck, flags (as check's:
-- 1 = DRYRUN, 2 = FORCE, 4 = WITHWINDOW), then for each key its algorithm, limit, period in ms,
-- burst (0 means the limit) and cost; then for tests only the clock in microseconds and 1 to force
-- the bignum path.
--
-- Replies {allowed, retry_after_ms, {five integers}, ...} as the module does. The request is
-- admitted only if every policy admits it; then every policy spends its cost, and the writes
-- (one SET ... PXAT per key) replicate together, as the script's effects do. When it is denied,
-- nothing is spent anywhere; only a key found without expiry gets the expiry its state implies.
local function mcheck(keys, argv)
  local flags = tonumber(argv[2])
  local dry_run = flags % 2 == 1
  local force = floor(flags / 2) % 2 == 1
  local with_window = floor(flags / 4) % 2 == 1
  local n = #keys
  local records, policies, costs = {}, {}, {}
  for i = 1, n do
    local at = 3 + (i - 1) * 5
    policies[i] = read_policy(argv, at)
    costs[i] = tonumber(argv[at + 4])
    local record, err = read_limiter(keys[i], nil)
    if not record then
      return err
    end
    records[i] = record
  end
  -- As the module: every key is read (WRONGTYPE, not a limiter) before any algorithm is checked.
  for i = 1, n do
    local wrong = wrong_algorithm(records[i].found, policies[i].algorithm)
    if wrong then
      return wrong
    end
  end
  local test_clock, force_exact = argv[3 + n * 5], argv[4 + n * 5] == '1'
  local now_us = read_clock(test_clock, records)
  local decisions, changes, windows = {}, {}, {}
  local allowed, never, longest = true, false, 0
  for i = 1, n do
    decisions[i], changes[i], windows[i] =
      decide_limiter(records[i], policies[i], now_us, costs[i], force, force_exact)
    local d = decisions[i]
    if d[1] == 0 then
      allowed = false
      if d[5] == -1 then
        never = true
      elseif d[5] > longest then
        longest = d[5]
      end
    end
  end
  local reply = { allowed and 1 or 0, allowed and 0 or (never and -1 or longest) }
  for i = 1, n do
    local change = changes[i]
    if not allowed and not force and change and change[1] == 'store' then
      -- Nothing is spent; a key without expiry still gets the repair of a request of cost 0.
      local _, repair_change = decide_limiter(records[i], policies[i], now_us, 0, false, force_exact)
      change = repair_change
    end
    if not dry_run then
      apply_change(keys[i], change)
    end
    if with_window then
      decisions[i][6] = windows[i]
    end
    reply[2 + i] = decisions[i]
  end
  return reply
end
-- refund: RATELIMIT.REFUND, units given back to the window they were spent in.
--
-- ARGV: refund, algorithm, limit, period in ms, burst (0 means the limit), the units to give
-- back, the window they were spent in (empty for the current one: FIXED's window end in ms,
-- SLIDING's window index; GCRA ignores it), then for tests only the clock in microseconds and 1
-- to force the bignum path.
--
-- Replies {refunded, limit, remaining, reset_after_ms, retry_after_ms}: the units given back,
-- then the standing afterwards as quota gives it. The change replicates as SET ... PXAT, or DEL
-- when the limiter is back to full capacity.
local function refund(keys, argv)
  local key = keys[1]
  local policy = read_policy(argv, 2)
  local amount = tonumber(argv[6])
  local target = nil
  if argv[7] and argv[7] ~= '' then
    -- false for a window no number below 2^53 can equal.
    target = small(canonical(argv[7], U64_MAX) or '18446744073709551615') or false
  end
  local force_exact = argv[9] == '1'
  local record, err = read_limiter(key, policy.algorithm)
  if not record then
    return err
  end
  local now_us = read_clock(argv[8], { record })
  local refunded, change
  if policy.algorithm == 'FIXED' then
    refunded, change =
      fixed_refund(policy.period_ms, record.a, record.expire_at, now_us, amount, target)
  elseif policy.algorithm == 'SLIDING' then
    refunded, change = sliding_refund(policy.period_ms, record, now_us, amount, target)
  else
    refunded, change = gcra(policy.limit, policy.period_ms, policy.burst, record.a,
      record.expire_at, now_us, 'refund', amount, false, force_exact)
  end
  apply_change(key, change)
  local after = standing(record_after(record, change), policy, now_us, 1, force_exact)
  return { refunded, after[2], after[3], after[4], after[5] }
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
  mcheck = mcheck,
  refund = refund,
  reset = reset,
  acquire = acquire,
  release = release,
}

local name = ARGV[1]
local command = name and commands[string.lower(name)]
if not command then
  -- Echoed as the module echoes arguments: printable ASCII only, at most 64 bytes.
  local echo = tostring(name):sub(1, 64):gsub('[^ -~]', '?')
  return { err = "ERR unknown ratelimit script command '" .. echo ..
    "': expected check, quota, mcheck, refund, reset, acquire or release" }
end
return command(KEYS, ARGV)
