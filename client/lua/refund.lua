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
