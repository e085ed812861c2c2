"""A circuit breaker, so that the store stops sending commands to a Redis that does not answer
(``client/src/breaker.rs``).

- **Closed**: every call goes through. ``failure_threshold`` consecutive failures open it.
- **Open** until a deadline: no call goes through; the store's failure policy answers.
- **Half-open**: once the deadline has passed, exactly one caller is let through, the probe. Its
  success closes the breaker; its failure opens it again for twice as long, up to
  ``max_backoff``. A probe that never reports back does not wedge the breaker: after the current
  backoff another probe is let through.

Each opening lasts the current backoff with equal jitter, uniform in ``[backoff / 2, backoff]``,
so that clients that lost Redis together do not all probe it at the same instant.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from enum import Enum
from typing import Callable, Optional

#: The longest backoff a breaker uses, whatever its configuration: one day, in seconds.
BACKOFF_CAP = 86_400.0


@dataclass(frozen=True)
class BreakerConfig:
    """When a :class:`Breaker` opens and for how long. Times are in seconds."""

    #: Consecutive failures that open a closed breaker; 0 counts as 1.
    failure_threshold: int = 1
    #: The first backoff; at least 1 ms is used.
    base_backoff: float = 0.1
    #: The longest backoff, reached by doubling; at least ``base_backoff``, at most a day.
    max_backoff: float = 10.0


class BreakerState(Enum):
    """Where a :class:`Breaker` is."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class Breaker:
    """A circuit breaker shared by every call to one Redis; safe to use from several threads."""

    def __init__(self, config: Optional[BreakerConfig] = None, clock: Callable[[], float] = time.monotonic) -> None:
        config = config or BreakerConfig()
        self.failure_threshold = max(config.failure_threshold, 1)
        self.base_backoff = min(max(config.base_backoff, 0.001), BACKOFF_CAP)
        self.max_backoff = min(max(config.max_backoff, self.base_backoff), BACKOFF_CAP)
        self._clock = clock
        self._lock = threading.Lock()
        self._random = random.Random()
        self._state = BreakerState.CLOSED
        self._failures = 0
        #: Open: when the next probe may go; half-open: when another probe may go.
        self._until = 0.0
        self._backoff = self.base_backoff

    def allow(self) -> bool:
        """Whether a call may go to Redis now: always when closed, never while open, and for
        exactly one caller (the probe) once the opening has passed or a probe has gone
        unanswered for the current backoff."""
        if self._state is BreakerState.CLOSED:
            return True
        with self._lock:
            now = self._clock()
            if self._state is BreakerState.CLOSED:
                return True
            if now >= self._until:
                self._state = BreakerState.HALF_OPEN
                self._until = now + self._backoff
                return True
            return False

    def on_success(self) -> None:
        """Reports a call that Redis answered: the breaker closes and its backoff starts over."""
        if self._state is BreakerState.CLOSED and self._failures == 0:
            return
        with self._lock:
            self._state = BreakerState.CLOSED
            self._failures = 0
            self._backoff = self.base_backoff

    def on_failure(self) -> None:
        """Reports a failed call. A closed breaker opens at the threshold, and a half-open one (a
        failed probe) at once, each for the current backoff with jitter; the next backoff is
        twice as long, up to the maximum. An open breaker ignores late failures."""
        with self._lock:
            if self._state is BreakerState.OPEN:
                return
            if self._state is BreakerState.CLOSED and self._failures + 1 < self.failure_threshold:
                self._failures += 1
                return
            half = self._backoff / 2
            self._state = BreakerState.OPEN
            self._until = self._clock() + half + self._random.uniform(0, self._backoff - half)
            self._backoff = min(self._backoff * 2, self.max_backoff)

    @property
    def state(self) -> BreakerState:
        """Where the breaker is."""
        return self._state

    def retry_in(self) -> float:
        """Seconds until Redis is next tried: while open, until the next probe; otherwise the
        base backoff, the shortest opening."""
        with self._lock:
            if self._state is BreakerState.OPEN:
                return max(self._until - self._clock(), 0.0)
            return self.base_backoff
