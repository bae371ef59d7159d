"""A pool serves for its whole life whichever thread created or uses it (issue 7, item 1), while its server, template,
zygotes and runs never outlive the host process; a forked child does not touch its parent's pools."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest
from sandbox_helpers import MODES, pool_processes

from grporoc_plugin.sandbox import SandboxConfig, SandboxPool, SandboxStartInterruptedError
from grporoc_plugin.sandbox.cgroups import pool_resources, sweep_stale

CFG = SandboxConfig(isolation=MODES[0], max_concurrency=2)


def no_restart(caplog) -> None:
    assert "restarting it" not in caplog.text, caplog.text


def test_pool_created_in_to_thread_serves_later_event_loops(caplog):
    caplog.set_level(logging.WARNING, logger="grporoc_plugin.sandbox")
    pool = asyncio.run(asyncio.to_thread(SandboxPool, CFG))  # the worker thread and its loop's executor are gone
    try:
        server = pool.server_pid
        time.sleep(0.3)  # a parent-death signal tied to the dead thread would have fired by now
        r = asyncio.run(pool.aexecute("print(3)"))
        assert (r.status, r.stdout) == ("ok", "3\n"), r
        assert pool.server_pid == server
        no_restart(caplog)
    finally:
        pool.close()


def test_pool_created_in_a_thread_that_exits(caplog):
    caplog.set_level(logging.WARNING, logger="grporoc_plugin.sandbox")
    box: list[SandboxPool] = []
    t = threading.Thread(target=lambda: box.append(SandboxPool(CFG)))
    t.start()
    t.join()
    pool = box[0]
    try:
        server = pool.server_pid
        time.sleep(0.3)
        assert pool.execute("1 + 1").stdout == "2\n"
        assert pool.server_pid == server and psutil.pid_exists(server)
        no_restart(caplog)
    finally:
        pool.close()


def test_call_in_flight_while_the_creating_thread_exits(caplog):
    caplog.set_level(logging.WARNING, logger="grporoc_plugin.sandbox")
    box: list = []

    def create_and_start() -> None:
        pool = SandboxPool(CFG)
        box.append(pool)
        box.append(pool._submit("import time\ntime.sleep(1)\nprint('done')", "", 5.0, None))

    t = threading.Thread(target=create_and_start)
    t.start()
    t.join()  # the creating thread is gone while the call runs
    pool, fut = box
    try:
        r = fut.result(timeout=30)
        assert (r.status, r.stdout) == ("ok", "done\n"), r
        assert pool.execute("print(4)").stdout == "4\n"
        no_restart(caplog)
    finally:
        pool.close()


HOST = """
import os, sys, threading, time
from grporoc_plugin.sandbox import SandboxConfig, SandboxPool
box = []
t = threading.Thread(target=lambda: box.append(SandboxPool(SandboxConfig(isolation=sys.argv[1], max_concurrency=2))))
t.start(); t.join()
pool = box[0]
RUN = "import os, time\\nif os.fork() == 0:\\n    os.setsid()\\n    time.sleep(600)\\ntime.sleep(600)"
fut = pool._submit(RUN, "", 600.0, None)
time.sleep(1.5)
print(pool.marker, pool.server_pid, flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("mode", MODES)
def test_host_process_death_kills_server_and_runs(mode, tmp_path):
    """SIGKILL the host (pool made in a thread that ended, a run in flight with a detached grandchild): within
    seconds nothing of the pool is left; its cgroups and temp dir are swept by the next pool."""
    host = subprocess.Popen([sys.executable, "-c", HOST, mode], stdout=subprocess.PIPE, text=True)
    try:
        marker, server = host.stdout.readline().split()
        probe = SandboxPool.__new__(SandboxPool)
        probe.marker = marker
        assert len(pool_processes(probe)) >= 4  # server, template, zygotes, the run and its grandchild...
    finally:
        host.send_signal(signal.SIGKILL)
        host.wait()
    deadline = time.monotonic() + 10
    while pool_processes(probe) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pool_processes(probe) == [], [p.cmdline() for p in pool_processes(probe)]
    assert not psutil.pid_exists(int(server)) or psutil.Process(int(server)).status() == psutil.STATUS_ZOMBIE
    left = [p for p in pool_resources() if marker in p]
    assert left  # a killed host cannot clean up after itself...
    deadline = time.monotonic() + 10
    while [p for p in pool_resources() if marker in p] and time.monotonic() < deadline:
        sweep_stale()  # ...the next pool's sweep does (once the dead processes are reaped: zombies hold a cgroup)
        time.sleep(0.1)
    assert not [p for p in pool_resources() if marker in p]


def test_forked_child_leaves_its_parents_pool_alone():
    with SandboxPool(CFG) as pool:
        server = pool.server_pid
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            code = 0
            try:
                pool.execute("1")
                code = 3  # must refuse: the server belongs to the parent
            except RuntimeError:
                pass
            os._exit(code)  # without closing anything; at a normal exit atexit would close nothing either
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert pool.server_pid == server and pool.execute("print(5)").stdout == "5\n"


def _kill_next_servers(monkeypatch, count: int) -> list[int]:
    """Makes the next ``count`` server launches die by SIGKILL right after they start, as an operator or the OOM
    killer would do it; returns the PIDs killed."""
    from grporoc_plugin.sandbox import launcher

    real_launch, killed = launcher.launch, []

    def launch(fn):
        proc = real_launch(fn)
        if len(killed) < count:
            os.kill(proc.pid, signal.SIGKILL)
            killed.append(proc.pid)
        return proc

    monkeypatch.setattr(launcher, "launch", launch)
    return killed


def test_server_killed_during_auto_start_is_retried_never_weakened(monkeypatch, caplog):
    """A SIGKILL during start says nothing about what the machine supports: ``auto`` starts the same isolation again
    and never falls back to a weaker one on it (seen in CI: a kill during start left the pool on bubblewrap)."""
    caplog.set_level(logging.WARNING, logger="grporoc_plugin.sandbox")
    with SandboxPool(SandboxConfig(isolation="auto", max_concurrency=1)) as reference:
        expected = reference.isolation  # what auto gives on this host, undisturbed
    fallbacks = caplog.text.count("fell back")  # hosts without namespaces fall back on every start
    caplog.clear()
    killed = _kill_next_servers(monkeypatch, 1)
    with SandboxPool(SandboxConfig(isolation="auto", max_concurrency=1)) as pool:
        assert len(killed) == 1 and "killed (SIGKILL) during start" in caplog.text, caplog.text
        assert pool.isolation == expected and caplog.text.count("fell back") == fallbacks, caplog.text
        assert pool.execute("print(5)").stdout == "5\n"


def test_server_killed_at_every_start_attempt_fails_without_falling_back(monkeypatch, caplog):
    from grporoc_plugin.sandbox.backends.forkserver import ForkServerBackend

    caplog.set_level(logging.WARNING, logger="grporoc_plugin.sandbox")
    before = pool_resources()
    killed = _kill_next_servers(monkeypatch, ForkServerBackend.START_ATTEMPTS)
    with pytest.raises(SandboxStartInterruptedError, match="killed"):
        SandboxPool(SandboxConfig(isolation="auto", max_concurrency=1))
    assert len(killed) == ForkServerBackend.START_ATTEMPTS, "each attempt restarts the same isolation mode"
    assert "fell back" not in caplog.text, caplog.text
    assert pool_resources() == before, "a failed start left a cgroup or temp dir behind"


def test_server_killed_during_restart_keeps_the_pool_and_its_isolation(monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger="grporoc_plugin.sandbox")
    with SandboxPool(CFG) as pool:
        features, first = pool._backend.client.features, pool.server_pid
        os.kill(first, signal.SIGKILL)
        killed = _kill_next_servers(monkeypatch, 1)
        deadline = time.monotonic() + 10
        while pool._backend.client.alive and time.monotonic() < deadline:
            time.sleep(0.05)  # the reader thread sees the connection drop
        r = pool.execute("print(6)")  # the restart is killed: this call fails as an infrastructure error...
        assert r.status == "sandbox_error" and "killed (SIGKILL) during start" in r.detail, r
        assert len(killed) == 1 and "restarting it" in caplog.text
        r = pool.execute("print(6)")  # ...and the next one gets a new server with the same isolation layers
        assert (r.status, r.stdout) == ("ok", "6\n"), r
        assert pool._backend.client.features == features and pool.server_pid not in (first, *killed)
