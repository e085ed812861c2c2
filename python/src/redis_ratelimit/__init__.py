"""redis-ratelimit: rate limiting inside Redis, from Python."""
from .scripts import INCREMENT_SOURCE, SCRIPT_SOURCE
