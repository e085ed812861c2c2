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
