"""Masking for logs: user IDs, keys and credentials never appear in clear (``client/src/mask.rs``).

Every log line of this package that names a subject goes through these functions. They are
public so that an application can log the same way.
"""

from __future__ import annotations

#: What replaces the hidden part: always four characters, so its length does not show.
STARS = "****"

_SENSITIVE = ("pass", "secret", "token", "auth", "key")


def mask_id(identifier: str) -> str:
    """Masks an identifier: its first two characters and ``****``, e.g. ``1234567`` ->
    ``12****``. A shorter identifier shows fewer (``42`` -> ``****``), so that at most a third
    of it is ever visible."""
    shown = min(len(identifier) // 3, 2)
    return identifier[:shown] + STARS


def mask_key(prefix: str, key: str) -> str:
    """Masks a Redis key: the ``prefix``, which is configuration and not a secret, stays when
    the key starts with it, and the rest is masked by :func:`mask_id`, e.g. ``ratelimit:12****``."""
    if prefix and key.startswith(prefix):
        return prefix + mask_id(key[len(prefix):])
    return mask_id(key)


def mask_url(url: str) -> str:
    """Masks the credentials of a Redis URL: ``redis://user:secret@host:6379/0`` becomes
    ``redis://user:****@host:6379/0``, and a user alone (``redis://token@host``) is masked
    whole. Query parameters whose name mentions a password, a secret, a token, auth or a key
    have their value masked, and a fragment is dropped. Anything that does not look like a URL
    is masked whole."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        return STARS
    # Everything before the last `@` is credentials, even when a password holds an unencoded
    # `/`, `?` or `#`: better mask too much than leak.
    userinfo, at, after = rest.rpartition("@")
    if not at:
        userinfo, after = None, rest
    host_end = min((i for i in (after.find(c) for c in "/?#") if i >= 0), default=len(after))
    host, tail = after[:host_end], after[host_end:]
    if userinfo is None:
        authority = host
    else:
        user, colon, _ = userinfo.partition(":")
        if colon and not any(c in user for c in "/?#"):
            authority = f"{user}:{STARS}@{host}"
        else:
            authority = f"{STARS}@{host}"
    return f"{scheme}://{authority}{_mask_query(tail)}"


def _mask_query(tail: str) -> str:
    tail = tail.split("#", 1)[0]
    path, question, query = tail.partition("?")
    if not question:
        return tail
    parameters = []
    for parameter in query.split("&"):
        name, equals, _ = parameter.partition("=")
        sensitive = equals and any(word in name.lower() for word in _SENSITIVE)
        parameters.append(f"{name}={STARS}" if sensitive else parameter)
    return f"{path}?{'&'.join(parameters)}"
