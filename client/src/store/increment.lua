-- The seed's counter: INCRBY, and an expiry set only when the counter has none, i.e. when it
-- was just created (or was written by hand without one). An existing expiry is never extended,
-- so a client that keeps counting cannot keep its window open forever. No `PEXPIRE NX`: this
-- runs on Redis 6.2.
--
-- KEYS[1]  the counter
-- ARGV[1]  the amount
-- ARGV[2]  the expiry in milliseconds
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) == -1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return value
