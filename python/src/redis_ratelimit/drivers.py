"""Running the engine's operations: with a blocking redis-py client, or awaiting an asyncio one.

Each yielded call is executed and its reply sent back into the operation; an error is thrown
into it, where the engine decides what it means. Scripts go by ``EVALSHA``, and by ``EVAL`` (their
whole text, cached by the server) when it answers ``NOSCRIPT`` (after a restart, ``SCRIPT FLUSH``
or a failover).
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

import redis

from .engine import Call, Eval, Operation, T, Transaction


def run(client: Any, operation: Operation[T]) -> T:
    """Runs ``operation`` to its end with the blocking ``client``."""
    reply: Any = None
    error: Any = None
    while True:
        try:
            request = operation.send(reply) if error is None else operation.throw(error)
        except StopIteration as done:
            return done.value
        reply, error = None, None
        try:
            reply = _execute(client, request)
        except Exception as exc:  # every failure is the operation's to judge
            error = exc


def _execute(client: Any, request: Any) -> Any:
    if isinstance(request, Call):
        return client.execute_command(*request.args)
    if isinstance(request, Eval):
        arguments = (len(request.keys), *request.keys, *request.args)
        try:
            return client.execute_command("EVALSHA", request.script.sha, *arguments)
        except redis.exceptions.NoScriptError:
            # The whole script, sent where the key lives (and cached there): SCRIPT LOAD goes to
            # the nodes a cluster client knows of, which during a failover can miss the new master.
            return client.execute_command("EVAL", request.script.source, *arguments)
    if isinstance(request, Transaction):
        pipe = client.pipeline(transaction=True)
        for command in request.commands:
            pipe.execute_command(*command)
        return _replies(pipe.execute(raise_on_error=False))
    raise TypeError(f"unknown request {request!r}")


def _replies(replies: list) -> list:
    # The first error as the server gave it: redis-py's raise_on_error rewrites the message,
    # with the command and its key in it.
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


async def run_async(client: Any, operation: Operation[T]) -> T:
    """Runs ``operation`` to its end with the asyncio ``client`` (``redis.asyncio``)."""
    reply: Any = None
    error: Any = None
    while True:
        try:
            request = operation.send(reply) if error is None else operation.throw(error)
        except StopIteration as done:
            return done.value
        reply, error = None, None
        try:
            reply = await _execute_on_this_loop(client, request)
        except Exception as exc:  # every failure is the operation's to judge
            error = exc


#: The event loop each asyncio client was last used on.
_LOOPS: "weakref.WeakKeyDictionary[Any, weakref.ref]" = weakref.WeakKeyDictionary()


def _on_this_loop(client: Any) -> None:
    """Drops the client's pooled connections when it was last used on another event loop: they
    belong to that loop (ended, as after one test client and before the next) and would fail,
    maybe after sending a command, with 'Event loop is closed'."""
    loop = asyncio.get_running_loop()
    try:
        last = _LOOPS.get(client)
        if last is not None and last() is not loop:
            client.connection_pool.reset()
        _LOOPS[client] = weakref.ref(loop)
    except TypeError:  # a client that takes no weak reference: left as it is
        pass


async def _execute_on_this_loop(client: Any, request: Any) -> Any:
    """Runs ``request`` on connections of the running event loop. A failure of a connection of
    another loop is a connection error: an outage to the store, not an exception of its own."""
    _on_this_loop(client)
    try:
        return await _execute_async(client, request)
    except RuntimeError as error:
        text = str(error)
        if "Event loop is closed" in text or "different loop" in text or "different event loop" in text:
            raise redis.exceptions.ConnectionError(f"a connection of another event loop: {error}") from error
        raise


async def _execute_async(client: Any, request: Any) -> Any:
    if isinstance(request, Call):
        return await client.execute_command(*request.args)
    if isinstance(request, Eval):
        arguments = (len(request.keys), *request.keys, *request.args)
        try:
            return await client.execute_command("EVALSHA", request.script.sha, *arguments)
        except redis.exceptions.NoScriptError:
            return await client.execute_command("EVAL", request.script.source, *arguments)
    if isinstance(request, Transaction):
        async with client.pipeline(transaction=True) as pipe:
            for command in request.commands:
                pipe.execute_command(*command)
            return _replies(await pipe.execute(raise_on_error=False))
    raise TypeError(f"unknown request {request!r}")
