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
