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
