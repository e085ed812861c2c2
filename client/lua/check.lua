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
