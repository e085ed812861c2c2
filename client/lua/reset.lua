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
