"""The RATELIMIT.* commands and the Lua script's arguments, built and read without I/O.

The module and the script reply identically, so each operation has one reader. Periods go to
the module with a unit (``1500ms``) and to the script in milliseconds; the script's ARGV is
positional, documented in the header of each part of ``client/lua/``. ``ALGORITHM`` is always
sent, so that the module's configurable default algorithm never applies.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

from .core import GCRA, Limit

#: CHECK's and MCHECK's flags, as the script sums them.
DRYRUN, FORCE, WITHWINDOW = 1, 2, 4


def _limit_words(limit: Limit) -> List[Any]:
    words: List[Any] = [limit.limit, f"{limit.period_ms}ms", "ALGORITHM", limit.algorithm]
    if limit.algorithm == GCRA and limit.burst is not None:
        words += ["BURST", limit.burst]
    return words


def _script_policy(limit: Limit) -> List[Any]:
    burst = limit.burst if limit.algorithm == GCRA and limit.burst is not None else 0
    return [limit.algorithm, limit.limit, limit.period_ms, burst]


def _flag_words(flags: int) -> List[str]:
    words = []
    if flags & DRYRUN:
        words.append("DRYRUN")
    if flags & FORCE:
        words.append("FORCE")
    if flags & WITHWINDOW:
        words.append("WITHWINDOW")
    return words


def check(key: str, limit: Limit, cost: int, flags: int) -> Tuple[List[Any], List[Any]]:
    """``RATELIMIT.CHECK key limit period ALGORITHM a [BURST n] COST c [DRYRUN|FORCE] [WITHWINDOW]``,
    and the script's ``check`` arguments."""
    module = ["RATELIMIT.CHECK", key, *_limit_words(limit), "COST", cost, *_flag_words(flags)]
    return module, ["check", *_script_policy(limit), cost, flags]


def quota(key: str, limit: Limit, cost: int) -> Tuple[List[Any], List[Any]]:
    """``RATELIMIT.QUOTA key limit period ALGORITHM a [BURST n] COST c``, and the script's ``quota``."""
    module = ["RATELIMIT.QUOTA", key, *_limit_words(limit), "COST", cost]
    return module, ["quota", *_script_policy(limit), cost, 0]


def mcheck(keys: Sequence[str], limits: Sequence[Limit], costs: Sequence[int], flags: int) -> Tuple[List[Any], List[Any]]:
    """``RATELIMIT.MCHECK numkeys key... (LIMIT l p ALGORITHM a [BURST n] COST c)... [flags]``,
    and the script's ``mcheck``."""
    module: List[Any] = ["RATELIMIT.MCHECK", len(keys), *keys]
    script: List[Any] = ["mcheck", flags]
    for limit, cost in zip(limits, costs):
        module += ["LIMIT", *_limit_words(limit), "COST", cost]
        script += [*_script_policy(limit), cost]
    return module + _flag_words(flags), script


def refund(key: str, limit: Limit, amount: int, window: Optional[int]) -> Tuple[List[Any], List[Any]]:
    """``RATELIMIT.REFUND key limit period ALGORITHM a [BURST n] COST n [WINDOW w]``, and the
    script's ``refund``. GCRA takes no window."""
    if limit.algorithm == GCRA:
        window = None
    module = ["RATELIMIT.REFUND", key, *_limit_words(limit), "COST", amount]
    if window is not None:
        module += ["WINDOW", window]
    return module, ["refund", *_script_policy(limit), amount, "" if window is None else window]


def reset(key: str) -> Tuple[List[Any], List[Any]]:
    """``RATELIMIT.RESET key``, and the script's ``reset``."""
    return ["RATELIMIT.RESET", key], ["reset"]


def acquire(key: str, limit: int, lease_ms: int, lease_id: Optional[str]) -> Tuple[List[Any], List[Any]]:
    """``RATELIMIT.ACQUIRE key limit lease [ID id]``, and the script's ``acquire``."""
    module: List[Any] = ["RATELIMIT.ACQUIRE", key, limit, f"{lease_ms}ms"]
    if lease_id is not None:
        module += ["ID", lease_id]
    return module, ["acquire", limit, lease_ms, lease_id or ""]


def release(key: str, lease_id: str) -> Tuple[List[Any], List[Any]]:
    """``RATELIMIT.RELEASE key id``, and the script's ``release``."""
    return ["RATELIMIT.RELEASE", key, lease_id], ["release", lease_id]


def text(value: Any) -> Optional[str]:
    """A bulk string reply as text, for clients with or without ``decode_responses``."""
    if value is None or value is False:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return str(value)


def module_listed(reply: Any) -> bool:
    """Whether a ``COMMAND INFO ratelimit.check`` reply lists the command: redis-py turns it into
    a dict of the commands found, or leaves an array whose entry is nil when it is unknown."""
    if isinstance(reply, dict):
        return any(text(name) and text(name).lower() == "ratelimit.check" and entry for name, entry in reply.items())
    if isinstance(reply, (list, tuple)):
        return bool(reply) and reply[0] is not None
    return False
