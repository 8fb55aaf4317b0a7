"""SIGINT and SIGTERM end a run cleanly: it stops, records ``interrupted`` and releases its lock.

Python turns SIGINT into :class:`KeyboardInterrupt` (inside ``asyncio.run`` it first cancels
the running requests). SIGTERM is made to do the same, and remembered, so that the run can
exit with 143 instead of 130.
"""

from __future__ import annotations

import signal
from types import FrameType

_received: int | None = None


def install() -> None:
    """Make SIGTERM interrupt the process the way Ctrl-C does (main thread only)."""
    signal.signal(signal.SIGTERM, _on_sigterm)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    global _received
    _received = signum
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):  # Python's default, or asyncio.run's: cancel, then KeyboardInterrupt
        handler(signal.SIGINT, frame)
        return
    raise KeyboardInterrupt


def received() -> int:
    """The signal that interrupted the process: SIGTERM if it came, else SIGINT."""
    return _received or int(signal.SIGINT)


def was_interrupted(exc: BaseException) -> bool:
    """Did ``exc`` come from an interruption (a signal, or requests cancelled by one)?"""
    import asyncio

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt | asyncio.CancelledError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return _received is not None
