"""The template kills everything below it however it ends, also when it only sees the broker's socket close.

When the broker dies, the kernel closes its files before its exit sends the template SIGTERM (the parent-death
signal). A template that woke up on the socket's EOF first used to exit at once: its zygotes, runs' inits and snippet
processes followed by their own parent-death signals, but what a run had detached (setsid) was reparented to the
host's init and lived on (CI, rlimits-only mode, about one run in four with both cores busy). Here the test plays the
broker, so no SIGTERM ever comes: only the EOF. Deterministic, and it fails without the fix.
"""

from __future__ import annotations

import os
import pickle
import select
import socket
import time

import psutil

from grporoc_plugin.sandbox.server import _confine, _zygote

DETACH = """
import os, time
pid = os.fork()
if pid == 0:
    os.setsid()
    time.sleep(600)
print(pid, flush=True)
time.sleep(600)
"""


def _read_line(fd: int, timeout_s: float = 20.0) -> str:
    data, deadline = b"", time.monotonic() + timeout_s
    while not data.endswith(b"\n"):
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, f"no line from the run within {timeout_s} s (got {data!r})"
        chunk = os.read(fd, 256)
        assert chunk, f"the run's stdout closed early (got {data!r})"
        data += chunk
    return data.decode()


def _start_detaching_run(broker: socket.socket) -> int:
    """Plays the broker for one run of slot 0 that detaches a sleeping grandchild; returns the grandchild's PID."""
    msg, fds = _zygote.recv_msg(broker)
    assert msg is not None and msg["op"] == "slot", msg
    zygote = socket.socket(fileno=fds[0])
    msg, _ = _zygote.recv_msg(zygote)
    assert msg is not None and msg["op"] == "zygote", msg
    msg, fds = _zygote.recv_msg(zygote)
    assert msg is not None and msg["op"] == "prepared", msg
    snippet = socket.socket(fileno=fds[0])
    request = {"code": DETACH, "stdin": b"", "memory_mb": 512, "cpu_limit_s": 60, "max_open_files": 64}
    memfd = os.memfd_create("request", os.MFD_CLOEXEC)
    os.write(memfd, pickle.dumps(request))
    pipes = [os.pipe() for _ in range(4)]  # stdout, stderr, report, setup
    socket.send_fds(snippet, [b"go"], [memfd, *(w for _, w in pipes)])
    for fd in (memfd, *(w for _, w in pipes)):
        os.close(fd)
    grandchild = int(_read_line(pipes[0][0]))
    for r, _ in pipes:
        os.close(r)
    snippet.close()
    zygote.close()
    return grandchild


def test_template_kills_everything_below_it_when_the_broker_socket_closes(tmp_path):
    plan = _confine.RunPlan(
        features=frozenset(),  # rlimits-only: no PID namespace, the run's detached processes are only ours to kill
        run_uid=None,
        setgroups=False,
        tmpfs_mb=16,
        seccomp_bpf=None,
        drop_caps=False,
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        limits={"max_file_bytes": 1 << 20, "max_open_files": 64, "max_processes": 256},
    )
    sp = _zygote.SlotPlan(
        plan=plan, slots=1, slot_userns=False, cgroup_procs=(), workdir_base=str(tmp_path), run_uid=None
    )
    broker, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    template = os.fork()
    if template == 0:  # pragma: no cover - the template's process
        broker.close()
        _zygote.template_main(theirs, sp, os.getppid())  # never returns
    theirs.close()
    grandchild = None
    try:
        grandchild = _start_detaching_run(broker)
        assert psutil.Process(grandchild).status() != psutil.STATUS_ZOMBIE
        broker.close()  # the broker is "gone": EOF, and no SIGTERM (the template's parent lives on)
        deadline = time.monotonic() + 10
        while os.waitpid(template, os.WNOHANG)[0] == 0:
            assert time.monotonic() < deadline, "the template did not exit after the broker's socket closed"
            time.sleep(0.02)
        template = 0
        while psutil.pid_exists(grandchild) and psutil.Process(grandchild).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline, "the run's detached grandchild outlived the template"
            time.sleep(0.02)
    finally:
        if template:
            os.kill(template, 9)
            os.waitpid(template, 0)
        if grandchild is not None and psutil.pid_exists(grandchild):
            try:
                os.kill(grandchild, 9)
            except ProcessLookupError:
                pass
