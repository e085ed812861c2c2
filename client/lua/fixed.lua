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
