-- The seed's counter: INCRBY, and an expiry set only when the counter has none, i.e. when it
-- was just created (or was written by hand without one). An existing expiry is never extended,
-- so a client that keeps counting cannot keep its window open forever. No `PEXPIRE NX`: this
-- runs on Redis 6.2.
--
-- KEYS[1]  the counter
-- ARGV[1]  the amount
-- ARGV[2]  the expiry in milliseconds
redis.call('INCRBY', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) == -1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
-- The count read back as the string INCRBY stored: INCRBY's own reply reaches Lua as a double,
-- which rounds counts past 2^53 (and turns 2^63 - 1 into a negative integer on return).
return redis.call('GET', KEYS[1])
