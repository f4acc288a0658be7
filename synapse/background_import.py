"""Import a module in a thread of its own while the event loop keeps running.

At a cold start synapse's watchers connect and read the registry while the HAProxy side's
modules (~0.2 s of imports) load: the loop handles the registry's answers between the
import's GIL slices instead of after it. A thread of its own, not the default executor:
the import must not queue behind other blocking work.
"""

from __future__ import annotations

import asyncio
import importlib
import threading


async def import_in_thread(module: str) -> None:
    """Import ``module``; its ImportError (or any error of its import) is raised here."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def finish(exc: BaseException | None) -> None:  # on the loop
        if done.done():  # the awaiting task was cancelled (a stop during the start)
            return
        if exc is None:
            done.set_result(None)
        else:
            done.set_exception(exc)

    def work() -> None:
        try:
            importlib.import_module(module)
        except BaseException as exc:  # handed to the awaiting coroutine
            loop.call_soon_threadsafe(finish, exc)
        else:
            loop.call_soon_threadsafe(finish, None)

    threading.Thread(target=work, name=f"import-{module}", daemon=True).start()
    await done
