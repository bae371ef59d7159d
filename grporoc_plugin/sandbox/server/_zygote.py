"""Template and slot zygotes: the processes runs are forked from (stdlib only).

The template is forked by the broker before the broker reads its first request, so neither it nor anything forked from
it ever holds another request's code, input or output: a run can scan its whole memory and find only its own request.
It forks one zygote per slot (``max_concurrency`` slots), places it in the slot's cgroups and hands its socket to the
broker; when a zygote dies it kills what the zygote left and forks a replacement.

A zygote prepares one run at a time (see ``Zygote``) and hands it to the broker, which talks to the run directly: the
request never passes through the zygote, and neither does any result. Without PID namespaces the zygote is its runs'
subreaper: whatever a run leaves behind is reparented to the zygote and killed before the run is reported reaped.

Messages are pickled dicts on SOCK_SEQPACKET sockets between the broker, the template and the zygotes (all trusted
code; no run process holds any of these sockets).
"""

from __future__ import annotations

import gc
import os
import pickle
import selectors
import signal
import socket
import sys
import time
import traceback
from dataclasses import dataclass

try:  # package mode (host-side imports and tests) or script mode (the fork server's interpreter)
    from . import _confine, _linux, _runner
except ImportError:
    import _confine
    import _linux
    import _runner

MAX_MSG = 1 << 16


@dataclass(frozen=True)
class SlotPlan:
    """How zygotes are set up (decided by the broker before the template is forked)."""

    plan: _confine.RunPlan
    slots: int
    slot_userns: bool
    """Give each zygote its own user namespace (unprivileged hosts: RLIMIT_NPROC then counts per run)."""
    cgroup_procs: tuple[tuple[int, str], ...]
    """(directory fd, "slot-{k}/cgroup.procs" template) per cgroup hierarchy the zygote of slot k joins."""
    workdir_base: str
    """Host directory for run directories when runs have no scratch tmpfs."""
    run_uid: int | None


def send_msg(sock: socket.socket, obj: dict, fds: list[int] | tuple[int, ...] = ()) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    if fds:
        socket.send_fds(sock, [data], list(fds))
    else:
        sock.send(data)


def recv_msg(sock: socket.socket) -> tuple[dict | None, list[int]]:
    """(message, received fds); (None, []) at EOF (a peer that closed with messages unread resets: EOF too)."""
    try:
        data, fds, _, _ = socket.recv_fds(sock, MAX_MSG, 16, socket.MSG_CMSG_CLOEXEC)
    except ConnectionResetError:
        return None, []
    if not data:
        for fd in fds:
            os.close(fd)
        return None, []
    return pickle.loads(data), fds


def die_with_parent(parent: int) -> None:
    """SIGKILL when the parent dies (the parent is single-threaded, so its death is the thread's); if the parent died
    before this call, exit now."""
    _linux.prctl(_linux.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(0)


# ----------------------------------------------------------------------------------------------------------------------
# Template
# ----------------------------------------------------------------------------------------------------------------------


class Template:
    #: A slot whose zygote died this many times in a row within a second of its start is given up (reported).
    MAX_QUICK_DEATHS = 3

    def __init__(self, sock: socket.socket, sp: SlotPlan):
        self.sock, self.sp = sock, sp
        self.zygotes: dict[int, int] = {}  # pid -> slot
        self.started: dict[int, float] = {}  # slot -> when its zygote was forked
        self.quick_deaths: dict[int, int] = {}  # slot -> zygote deaths in a row within a second of their start

    def spawn(self, slot: int) -> None:
        """Forks the zygote of ``slot``, puts it in the slot's cgroups, then hands its socket to the broker."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        go_r, go_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                self.sock.close()
                ours.close()
                os.close(go_w)
                zygote_main(theirs, go_r, slot, self.sp, os.getppid())
            finally:
                os._exit(1)
        theirs.close()
        os.close(go_r)
        self.started[slot] = time.monotonic()
        try:
            for dirfd, name in self.sp.cgroup_procs:
                fd = os.open(name.format(k=slot), os.O_WRONLY | os.O_CLOEXEC, dir_fd=dirfd)
                try:
                    os.write(fd, str(pid).encode())
                finally:
                    os.close(fd)
            os.write(go_w, b"g")
        except OSError as e:
            os.kill(pid, signal.SIGKILL)
            send_msg(self.sock, {"op": "slot-failed", "slot": slot, "error": f"cgroup placement failed: {e!r}"})
        else:
            self.zygotes[pid] = slot
            send_msg(self.sock, {"op": "slot", "slot": slot, "pid": pid}, [ours.fileno()])
        finally:
            os.close(go_w)
            ours.close()

    def reap(self) -> None:
        """Reaps dead children; a dead zygote's orphans (reparented here) are killed and its slot is re-spawned."""
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            slot = self.zygotes.pop(pid, None)
            if slot is None:
                continue
            _linux.kill_descendants(os.getpid(), keep=set(self.zygotes), reap=False)
            self._remove_workdirs(f"run-{slot}-{pid}-")
            quick = time.monotonic() - self.started.get(slot, 0.0) < 1.0
            self.quick_deaths[slot] = self.quick_deaths.get(slot, 0) + 1 if quick else 0
            if self.quick_deaths[slot] >= self.MAX_QUICK_DEATHS:
                error = f"the zygote of slot {slot} keeps dying at start (see the server's stderr)"
                send_msg(self.sock, {"op": "slot-failed", "slot": slot, "error": error})
            else:
                self.spawn(slot)

    def _remove_workdirs(self, prefix: str) -> None:
        """The run directories a dead zygote left (runs without scratch tmpfs)."""
        if "scratch" in self.sp.plan.features:
            return
        for name in os.listdir(self.sp.workdir_base):
            if name.startswith(prefix):
                try:
                    _linux.remove_tree(os.path.join(self.sp.workdir_base, name))
                except OSError as e:
                    print(f"grporoc sandbox: could not remove {name}: {e!r}", file=sys.stderr)

    def serve(self) -> None:
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        for slot in range(self.sp.slots):
            self.spawn(slot)
        sel = selectors.DefaultSelector()
        sel.register(self.sock, selectors.EVENT_READ)
        sel.register(wake_r, selectors.EVENT_READ)
        while True:
            for key, _ in sel.select():
                if key.fd == wake_r:
                    while True:
                        try:
                            if not os.read(wake_r, 512):
                                break
                        except BlockingIOError:
                            break
                    self.reap()
                    continue
                msg, fds = recv_msg(self.sock)
                for fd in fds:
                    os.close(fd)
                if msg is None:
                    return  # the broker is gone: template_main kills everything below us on the way out
                if msg.get("op") == "kill-slot":
                    for pid, slot in self.zygotes.items():
                        if slot == msg["slot"]:
                            os.kill(pid, signal.SIGKILL)


def _kill_everything_and_exit(*_: object) -> None:
    _linux.kill_descendants(os.getpid(), reap=False)
    os._exit(0)


def template_main(sock: socket.socket, sp: SlotPlan, broker_pid: int) -> None:
    """Body of the template process. Never returns.

    However the template ends, it first kills every process below it: zygotes, runs, and what runs without a PID
    namespace detached (setsid, double fork), which would otherwise be reparented past every dying subreaper to the
    host's init. When the broker dies (the host died, or was killed) the template sees its socket close *before* the
    broker's exit sends it SIGTERM (the kernel closes a dying process's files first): either path ends here.
    """
    try:
        signal.signal(signal.SIGTERM, _kill_everything_and_exit)
        _linux.prctl(_linux.PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != broker_pid:
            _kill_everything_and_exit()
        _linux.prctl(_linux.PR_SET_CHILD_SUBREAPER, 1)  # orphans of a dead zygote come here, to be killed
        _runner.warm_up()  # before any fork: what the first run would build, every run inherits
        gc.collect()
        gc.freeze()  # forked zygotes and runs never traverse (and so never copy-on-write) these objects
        Template(sock, sp).serve()
    finally:
        _kill_everything_and_exit()


# ----------------------------------------------------------------------------------------------------------------------
# Zygote
# ----------------------------------------------------------------------------------------------------------------------


def zygote_main(sock: socket.socket, go_r: int, slot: int, sp: SlotPlan, template_pid: int) -> None:
    """Body of a slot zygote. Never returns."""
    try:
        die_with_parent(template_pid)
        gc.disable()  # nothing to collect in this loop; collecting would only touch shared pages
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        if os.read(go_r, 1) != b"g":  # the template has placed us in the slot's cgroups
            os._exit(1)
        os.close(go_r)
        try:
            if sp.slot_userns:
                _enter_slot_namespaces(sock)
            if "pid" not in sp.plan.features:
                _linux.prctl(_linux.PR_SET_CHILD_SUBREAPER, 1)
            own_pidns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC) if "pid" in sp.plan.features else -1
        except OSError as e:
            send_msg(sock, {"op": "failed", "error": f"zygote set-up failed: {e!r}"})
            os._exit(1)
        send_msg(sock, {"op": "zygote", "pid": _host_pid()})
        Zygote(sock, slot, sp, own_pidns).serve()
    except (BrokenPipeError, ConnectionResetError):  # the broker is gone (killed, or its host exited): nothing to
        os._exit(0)  # report to, and the client already says the server died; its runs die with this process
    except BaseException:  # noqa: BLE001 - a zygote's failure is the machinery's: say why, then go
        traceback.print_exc()
        os._exit(1)
    finally:
        os._exit(0)


def _enter_slot_namespaces(sock: socket.socket) -> None:
    """Unprivileged hosts: the slot gets its own user namespace (RLIMIT_NPROC then counts the slot's run alone) and,
    since a process cannot re-enter a PID namespace its old user namespace owns, its own PID namespace: the zygote
    proper is PID 1 there; this process stays as its keeper (dies with it, and it with this one)."""
    _linux.enter_user_namespace()
    _linux.unshare(_linux.CLONE_NEWPID)
    pid = os.fork()
    if pid != 0:
        sock.close()
        os.waitpid(pid, 0)
        os._exit(1)
    _linux.prctl(_linux.PR_SET_PDEATHSIG, signal.SIGKILL)


def _host_pid() -> int:
    """This process's PID in the server's PID namespace (the first of /proc/self/status's NSpid: /proc is the
    server's)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("NSpid:"):
                return int(line.split()[1])
    return os.getpid()


class Zygote:
    """Keeps one run prepared and hands it to the broker; reaps it when it is over; prepares the next.

    A prepared run is its init (PID 1 of a fresh PID namespace when available) and the snippet's process, both forked
    and confined ahead of the request (see ``_confine``). The broker gets, for each prepared run, the snippet
    process's socket (the request goes there), the init's report socket and a pidfd of the init (the run is over
    when the init has exited; killing the init kills the run): the zygote is on no call's path.
    """

    def __init__(self, sock: socket.socket, slot: int, sp: SlotPlan, own_pidns: int):
        self.sock, self.slot, self.sp, self.own_pidns = sock, slot, sp, own_pidns
        self.sel = selectors.DefaultSelector()
        self.sel.register(sock, selectors.EVENT_READ, "broker")
        self.seq = 0
        self.run: Prepared | None = None

    def serve(self) -> None:
        self.prepare()
        while True:
            for key, _ in self.sel.select():
                if key.data == "broker":
                    msg, fds = recv_msg(self.sock)
                    for fd in fds:
                        os.close(fd)
                    if msg is None:
                        return  # the broker is gone; the runs follow by their parent-death chain
                elif key.data == "ready":
                    self._hand_over()
                elif key.data == "exit":
                    self._reap()
                    self.prepare()

    def prepare(self) -> None:
        """Forks the next run's init (PID 1 of a fresh PID namespace when available), which forks the snippet's
        process; that one confines itself, says "ready" and waits for its request."""
        self.seq += 1
        workdir = self._make_workdir() if "scratch" not in self.sp.plan.features else None
        ctl, ctl_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        snippet, snippet_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork() if self.own_pidns < 0 else self._fork_in_new_pidns()
        if pid == 0:
            self.sock.close()
            ctl.close()
            snippet.close()
            _confine.init_main(self.sp.plan, ctl_theirs, snippet_theirs, workdir)  # never returns
        ctl_theirs.close()
        snippet_theirs.close()
        self.run = Prepared(self.seq, pid, os.pidfd_open(pid), ctl, snippet, workdir)
        self.sel.register(snippet, selectors.EVENT_READ, "ready")
        self.sel.register(ctl, selectors.EVENT_READ, "ready")  # the init failed before the snippet was forked

    def _fork_in_new_pidns(self) -> int:
        _linux.unshare(_linux.CLONE_NEWPID)  # the next child is PID 1 of a fresh namespace
        pid = -1
        try:
            pid = os.fork()
            return pid
        finally:
            if pid != 0:
                _linux.setns(self.own_pidns, _linux.CLONE_NEWPID)  # our own later children stay where they were

    def _hand_over(self) -> None:
        """The snippet process is ready (or the init failed): the broker gets the run; we watch the init's exit."""
        run = self.run
        assert run is not None
        self.sel.unregister(run.snippet)
        self.sel.unregister(run.ctl)
        try:
            run.snippet.recv(16, socket.MSG_DONTWAIT)  # "ready" (read now: an unread message resets the socket)
        except OSError:
            pass
        msg = {"op": "prepared", "seq": run.seq, "pid": run.pid, "workdir": run.workdir}
        send_msg(self.sock, msg, [run.snippet.fileno(), run.ctl.fileno(), run.pidfd])
        run.snippet.close()  # the broker holds them now
        run.ctl.close()
        self.sel.register(run.pidfd, selectors.EVENT_READ, "exit")

    def _reap(self) -> None:
        """The run's init has exited: reap it, kill what a run without a PID namespace left, remove its directory."""
        run = self.run
        assert run is not None
        self.sel.unregister(run.pidfd)
        os.waitpid(run.pid, 0)
        os.close(run.pidfd)
        if "pid" not in self.sp.plan.features:
            _linux.kill_descendants(os.getpid())  # we are the run's subreaper: what it left behind is ours to kill
        if run.workdir is not None:
            try:
                _linux.remove_tree(run.workdir)
            except OSError as e:
                print(f"grporoc sandbox: could not remove {run.workdir}: {e!r}", file=sys.stderr)
        send_msg(self.sock, {"op": "reaped", "seq": run.seq})
        self.run = None

    def _make_workdir(self) -> str:
        workdir = os.path.join(self.sp.workdir_base, f"run-{self.slot}-{os.getpid()}-{self.seq}")
        os.mkdir(workdir, 0o700)
        if self.sp.run_uid is not None:
            os.chown(workdir, self.sp.run_uid, self.sp.run_uid)
        return workdir


@dataclass
class Prepared:
    seq: int
    pid: int  # the run's init
    pidfd: int
    ctl: socket.socket  # the init's report: set-up failure, or the snippet process's wait status and CPU time
    snippet: socket.socket  # the snippet process: "ready", then its request
    workdir: str | None
