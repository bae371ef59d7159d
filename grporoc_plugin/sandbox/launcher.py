"""Starts sandbox server processes from one long-lived thread per host process.

The fork server dies with the host by a parent-death signal (``PR_SET_PDEATHSIG``), so that no server or run can
outlive the process that owns it. Linux ties that signal to the *thread* that forked the child, not to its process: a
server started from a worker thread (``asyncio.to_thread``, an executor, a ``threading.Thread``) would be killed as soon
as that thread ended, while the pool that owns it lives on. Every server is therefore started from this module's
daemon thread, which lives exactly as long as the process: the signal then fires on the death of the process, and
only then, whatever thread created or uses a pool.
"""

from __future__ import annotations

import concurrent.futures
import os
import queue
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class _Launcher:
    def __init__(self) -> None:
        self.pid = os.getpid()
        self._queue: queue.SimpleQueue[tuple[Callable[[], object], concurrent.futures.Future]] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._loop, name="grporoc-sandbox-launcher", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:  # never returns: the thread's end would be the death of every server it started
            fn, fut = self._queue.get()
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn())
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                fut.set_exception(e)

    def call(self, fn: Callable[[], T]) -> T:
        if threading.current_thread() is self.thread:
            return fn()
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._queue.put((fn, fut))
        return fut.result()


_launcher: _Launcher | None = None
_lock = threading.Lock()


def launch(fn: Callable[[], T]) -> T:
    """Runs ``fn`` (which starts a child process, e.g. ``subprocess.Popen``) in the process-lifetime launcher thread
    and returns its result; exceptions propagate to the caller."""
    global _launcher
    with _lock:
        if _launcher is None or _launcher.pid != os.getpid():  # a forked child has no launcher thread: start its own
            _launcher = _Launcher()
        launcher = _launcher
    return launcher.call(fn)


def launcher_thread() -> threading.Thread | None:
    """The launcher thread of this process, if started (tests)."""
    return _launcher.thread if _launcher is not None and _launcher.pid == os.getpid() else None


def _after_fork_in_child() -> None:
    global _launcher, _lock
    _launcher, _lock = None, threading.Lock()  # the parent's thread (and maybe its lock holder) is not here


os.register_at_fork(after_in_child=_after_fork_in_child)
