"""Work in a daemon thread, awaited from the app's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


async def in_daemon(work: Callable[[], T]) -> T:
    """`work()` in a daemon thread, awaited: the app's exit never waits for it (a thread
    worker is joined at exit, so q while a big model loaded took as long as the load)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def finish(result: T | None, error: BaseException | None) -> None:
        if done.done():
            return
        if error is None:
            done.set_result(result)  # type: ignore[arg-type]
        else:
            done.set_exception(error)

    def target() -> None:
        result, error = None, None
        try:
            result = work()
        except BaseException as err:  # raised again in the awaiting worker
            error = err
        with contextlib.suppress(RuntimeError):  # RuntimeError: the app's loop is closed
            loop.call_soon_threadsafe(finish, result, error)

    threading.Thread(target=target, name="gpt-tui-daemon", daemon=True).start()
    return await done
