"""A client that leaves cancels its request's task: one mechanism for every HTTP door.

``ClientWatch(receive, direct, active)`` is started by a handler (in the request's task) once
it has read the body. When the client's connection is lost while ``active()`` is true, the
task is cancelled and ``left`` is set, so that the handler can tell that cancellation from the
server's own (shutting down). Under the gateway's HTTP/1.1 protocol the protocol itself says
so (``DirectBody.on_client_gone``: nothing runs per request until then); anywhere else (an app
called in-process, another server) a task awaits ``receive`` until ``http.disconnect``, as the
ASGI specification has it. ``stop`` ends the watch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from shipit.gateway.direct import DirectBody
from shipit.gateway.proxy import Receive

__all__ = ["ClientWatch", "until_disconnect"]


async def until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class ClientWatch:
    __slots__ = ("_active", "_task", "_watcher", "left")

    def __init__(
        self, receive: Receive, direct: DirectBody | None, active: Callable[[], bool]
    ) -> None:
        self.left = False  # the client went away, and that cancelled the task
        self._active = active
        self._watcher: asyncio.Task[None] | None = None
        if direct is not None:
            # With the connection's loop: no system call (see ``DirectBody.loop``).
            self._task = asyncio.current_task(direct.loop)
            direct.on_client_gone(self._gone)
            return
        self._task = asyncio.current_task()
        loop = self._task.get_loop() if self._task is not None else asyncio.get_running_loop()
        self._watcher = loop.create_task(until_disconnect(receive))
        self._watcher.add_done_callback(lambda f: None if f.cancelled() else self._gone())

    def _gone(self) -> None:
        if self._active() and self._task is not None:
            self.left = True
            self._task.cancel()

    def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
