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
