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
