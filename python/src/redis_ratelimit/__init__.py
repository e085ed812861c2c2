"""redis-ratelimit: rate limiting inside Redis, from Python.

The blocking store is :class:`RedisStore` (``redis.Redis``); the asyncio one, with the same API,
is :class:`redis_ratelimit.asyncio.RedisStore` (``redis.asyncio``). Each uses the
``RATELIMIT.*`` commands of the redis-ratelimit module when the server has them, otherwise the
Lua script of identical meaning and storage (the Rust client's, shipped in this package), and an
in-memory limiter with the same semantics while Redis is down. See the README.
"""

from .base import DEFAULT_PREFIX
from .breaker import Breaker, BreakerConfig, BreakerState
from .core import ALGORITHMS, FIXED, GCRA, SLIDING, LimitError
from .decision import ALLOW, DENY, LOCAL, MODULE, SCRIPT, Decision, MultiDecision, Policy, Quota, Settlement, period_ms
from .errors import RateLimitError
from .http import PROBLEM_JSON, QUOTA_EXCEEDED, quota_exceeded_body, rate_limit_headers
from .mask import mask_id, mask_key, mask_url
from .memory import MemoryLimiter
from .scripts import INCREMENT_SOURCE, SCRIPT_SOURCE
from .store import Permit, RedisStore, Reservation, get_redis_client

__all__ = [
    "RedisStore", "get_redis_client", "Reservation", "Permit",
    "Decision", "MultiDecision", "Policy", "Quota", "Settlement", "period_ms",
    "RateLimitError", "LimitError", "MemoryLimiter", "Breaker", "BreakerConfig", "BreakerState",
    "rate_limit_headers", "quota_exceeded_body", "PROBLEM_JSON", "QUOTA_EXCEEDED",
    "mask_id", "mask_key", "mask_url", "SCRIPT_SOURCE", "INCREMENT_SOURCE", "DEFAULT_PREFIX",
    "ALGORITHMS", "FIXED", "SLIDING", "GCRA", "MODULE", "SCRIPT", "LOCAL", "ALLOW", "DENY",
]

__version__ = "0.1.0"
