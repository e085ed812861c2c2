"""The Lua scripts this package ships: the Rust client's files, with one source in the
repository (``client/lua/ratelimit.lua`` and ``client/src/store/increment.lua``), copied into
the package when it is built.
"""

from __future__ import annotations

from importlib import resources


def _read(name: str) -> str:
    return resources.files(__package__).joinpath("lua", name).read_text(encoding="utf-8")


#: The RATELIMIT.* commands as one script, for servers without the module.
SCRIPT_SOURCE: str = _read("ratelimit.lua")
#: The seed's counter: INCRBY, and an expiry set only when the counter has none.
INCREMENT_SOURCE: str = _read("increment.lua")
