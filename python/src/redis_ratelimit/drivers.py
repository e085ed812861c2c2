"""Running the engine's operations: with a blocking redis-py client, or awaiting an asyncio one.

Each yielded call is executed and its reply sent back into the operation; an error is thrown
into it, where the engine decides what it means. Scripts go by ``EVALSHA`` and are loaded again
when the server answers ``NOSCRIPT`` (after a restart, ``SCRIPT FLUSH`` or a failover).
"""

from __future__ import annotations

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
            client.execute_command("SCRIPT", "LOAD", request.script.source)
            return client.execute_command("EVALSHA", request.script.sha, *arguments)
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
            reply = await _execute_async(client, request)
        except Exception as exc:  # every failure is the operation's to judge
            error = exc


async def _execute_async(client: Any, request: Any) -> Any:
    if isinstance(request, Call):
        return await client.execute_command(*request.args)
    if isinstance(request, Eval):
        arguments = (len(request.keys), *request.keys, *request.args)
        try:
            return await client.execute_command("EVALSHA", request.script.sha, *arguments)
        except redis.exceptions.NoScriptError:
            await client.execute_command("SCRIPT", "LOAD", request.script.source)
            return await client.execute_command("EVALSHA", request.script.sha, *arguments)
    if isinstance(request, Transaction):
        async with client.pipeline(transaction=True) as pipe:
            for command in request.commands:
                pipe.execute_command(*command)
            return _replies(await pipe.execute(raise_on_error=False))
    raise TypeError(f"unknown request {request!r}")
