"""Fork server entry point and broker (stdlib only): ``python -I _broker.py FD``.

The broker talks to the host over the inherited socket (frames of 8-byte big-endian length + pickle; the host is
trusted and nothing the broker sends contains an object built by a snippet, only bytes it wrote). At start-up it sets
up the server's isolation (``_root``), finds which per-run layers work here (``probe_run_layers``), forks the template
(``_zygote``) before it has read any request, and says hello. Then, for each request, it hands a free slot's zygote the
run's descriptors, reads the run's stdout/stderr/report/set-up pipes, enforces the deadline and output cap on its own
clock and byte count, and classifies the outcome (``_status.classify``) once the zygote reports the run gone.
"""

from __future__ import annotations

import collections
import errno
import gc
import os
import pickle
import selectors
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

if __package__:
    from . import _confine, _linux, _root, _status, _zygote
else:  # run as a script: import the siblings, then take their directory off sys.path (snippets must not see it)
    _HERE = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, _HERE)
    import _confine  # noqa: E402
    import _linux  # noqa: E402
    import _root  # noqa: E402
    import _runner  # noqa: E402,F401 - preloaded: every run uses it
    import _status  # noqa: E402
    import _zygote  # noqa: E402

    sys.path.remove(_HERE)

HEADER = struct.Struct(">Q")
SETUP_TIMEOUT_S = 20.0  # a run's set-up (namespaces, mounts) normally takes milliseconds; this is a backstop
KILL_GRACE_S = 10.0  # a killed run not over by then (hundreds of processes, a thrashing cgroup) costs its zygote
#: The run's memory cgroup gets this much above ``memory_mb`` for the run's own machinery (its init, page tables, the
#: interpreter's file pages): a single process meets RLIMIT_AS (Python's MemoryError, as in the release) first, the
#: cgroup bounds what the rlimits cannot see (children, shared memory, memfds, scratch files).
CGROUP_HEADROOM_MB = 64
MAX_REPORT = 64  # bytes read from a run's report pipe (the snippet can write there; the rest is never read)
MAX_SETUP = 4096
#: Per-run layers the host may switch off (benchmarks measure each one's cost): config name -> feature.
LAYERS = {
    "pidns": "pid",
    "netns": "runnet",
    "ipcns": "ipc",
    "scratch": "scratch",
    "seccomp": "seccomp",
    "memcg": "memcg",
    "pidcg": "pidcg",
    "uid": "uid",
}


SLOTS_TIMEOUT = "sandbox slots did not start in time"


def send_frame(sock: socket.socket, obj: object) -> None:
    payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(HEADER.pack(len(payload)) + payload)


def recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def recv_frame(sock: socket.socket) -> object | None:
    head = recv_exact(sock, HEADER.size)
    if head is None:
        return None
    body = recv_exact(sock, HEADER.unpack(head)[0])
    return None if body is None else pickle.loads(body)


# ----------------------------------------------------------------------------------------------------------------------
# Start-up: the server's isolation and the per-run layers that work here
# ----------------------------------------------------------------------------------------------------------------------


def setup_isolation(cfg: dict) -> tuple[set[str], list[str]]:
    """Enters the namespaces the config asks for and the kernel allows; returns (server features, notes)."""
    features: set[str] = set()
    notes: list[str] = []
    mode = cfg["isolation"]
    if mode == "bwrap":
        features |= {"net", "mount"}  # bubblewrap unshared the network and built the read-only root
    elif mode == "namespaces":
        got = _root.enter_namespaces(notes)
        features |= got & {"net"}
        if "mntns" in got:
            # Past this point a failure leaves a half-built root: the server refuses to start instead of running there.
            _root.build_root(cfg["fs"], cfg["tmpfs_mb"])
            _root.relocate_interpreter(cfg["fs"]["relocate"])
            features.add("mount")
    if _root.in_user_namespace():
        features.add("userns")
    elif "mount" in features and cfg["run_uid"] >= 0 and os.geteuid() == 0 and "uid" not in cfg["disable"]:
        # Snippets run as an unprivileged user: besides the hidden host, nothing root-owned is theirs to read or write.
        if _root.can_switch_uid(cfg["run_uid"]):
            features.add("uid")
        else:
            notes.append(f"cannot switch snippets to uid {cfg['run_uid']}; they run as uid 0 without capabilities")
    return features, notes


def probe_run_layers(cfg: dict, server: set[str]) -> tuple[set[str], list[str]]:
    """Tries every per-run layer once, in a child set up as a zygote's run would be; returns (layers, notes)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        got: list[str] = []
        notes: list[str] = []
        try:
            os.close(r)
            _probe_child(cfg, server, got, notes)
        except BaseException as e:  # noqa: BLE001
            notes.append(f"per-run layer probe failed: {e!r}")
        finally:
            os.write(w, pickle.dumps((got, notes)))
            os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    got, notes = pickle.loads(data) if data else ([], ["per-run layer probe died"])
    return set(got), notes


def _probe_child(cfg: dict, server: set[str], got: list[str], notes: list[str]) -> None:
    def attempt(name: str, fn: Callable[[], object]) -> bool:
        try:
            fn()
            got.append(name)
            return True
        except OSError as e:
            notes.append(f"per-run {name} unavailable: {e}")
            return False

    def private_mount_ns() -> None:
        _linux.unshare(_linux.CLONE_NEWNS)
        _linux.mount(None, "/", None, _linux.MS_REC | _linux.MS_PRIVATE)

    def seccomp() -> None:
        _linux.prctl(_linux.PR_SET_NO_NEW_PRIVS, 1)
        _linux.load_seccomp(cfg["seccomp_bpf"])

    if "mount" in server:
        if "userns" in server and not attempt("slot-userns", _linux.enter_user_namespace):
            return
        if attempt("pid-ns", lambda: _linux.unshare(_linux.CLONE_NEWPID)):
            # The rest of the probe runs in PID 1 of the new namespace, as a run would; it writes the answer.
            pid = os.fork()
            if pid != 0:
                os.waitpid(pid, 0)
                os._exit(0)
        attempt("mntns", private_mount_ns)
        if "mntns" in got and os.getpid() == 1:
            flags = _linux.MS_RDONLY | _linux.MS_NOSUID | _linux.MS_NODEV | _linux.MS_NOEXEC
            attempt("pid", lambda: _linux.mount("proc", "/proc", "proc", flags))
        attempt("runnet", lambda: _linux.unshare(_linux.CLONE_NEWNET))
        attempt("ipc", lambda: _linux.unshare(_linux.CLONE_NEWIPC | _linux.CLONE_NEWUTS))
        if "mntns" in got:
            attempt("scratch", lambda: _linux.mount("tmpfs", "/tmp", "tmpfs", 0, "size=1m,mode=1777"))
    if cfg["seccomp_bpf"] is not None:
        attempt("seccomp", seccomp)


# ----------------------------------------------------------------------------------------------------------------------
# Broker
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class Prepared:
    """A run its zygote has prepared: the snippet process's socket, the init's report socket, the init's pidfd."""

    seq: int
    pid: int  # of the init, in the zygote's PID namespace
    workdir: str | None  # the run's host directory (runs without scratch tmpfs)
    snippet: socket.socket
    ctl: socket.socket
    pidfd: int

    def close(self) -> None:
        self.snippet.close()
        self.ctl.close()
        os.close(self.pidfd)


@dataclass
class Run:
    """The broker's state of one run."""

    id: int
    slot: int
    req: dict
    prep: Prepared
    pipes: dict[str, int] = field(default_factory=dict)  # name -> read end (stdout, stderr, report, setup)
    bufs: dict[str, bytearray] = field(default_factory=lambda: collections.defaultdict(bytearray))
    started: float = 0.0  # when the snippet started (set-up handshake), 0 before
    deadline: float = 0.0
    killed_for: str | None = None
    killed_at: float = 0.0
    oom_before: int = 0
    report: dict = field(default_factory=dict)  # from the init: {"status", "cpu"} or {"failed"}
    init_exited: bool = False
    reaped: bool = False  # the zygote's word that what the run left is gone (needed without PID namespaces)


@dataclass
class Slot:
    sock: socket.socket
    pid: int  # of the zygote (in this PID namespace; first its keeper's, on hosts where it has one)
    prepared: Prepared | None = None
    run: Run | None = None
    reaped_seq: int = 0  # the zygote's last reaped run
    mem_fd: int = -1  # the slot's memory limit file
    memsw_fd: int = -1  # cgroup v1 with swap: memory+swap limit
    events_fd: int = -1  # the slot's OOM-kill counter (memory.events or memory.oom_control)


class Broker:
    def __init__(self, host: socket.socket, template: socket.socket, cfg: dict, plan: _confine.RunPlan):
        self.host, self.template, self.cfg, self.plan = host, template, cfg, plan
        self.cap = cfg["max_output_bytes"]
        self.sel = selectors.DefaultSelector()
        self.sel.register(host, selectors.EVENT_READ, ("host", None))
        self.sel.register(template, selectors.EVENT_READ, ("template", None))
        self.slots: dict[int, Slot] = {}
        self.pending: collections.deque[dict] = collections.deque()
        self.failed: str | None = None
        self.serving = False
        self.pidns = "pid" in plan.features

    # -- slots

    def on_template(self) -> None:
        msg, fds = _zygote.recv_msg(self.template)
        if msg is None:
            raise SystemExit("template died")
        if msg["op"] == "slot-failed":
            self.failed = msg["error"]
            slot = self.slots.pop(msg["slot"], None)
            if slot is not None:
                self._drop_slot(slot, msg["error"])
            if not self.slots and self.serving:
                raise SystemExit(msg["error"])  # no slot left: the host sees the server gone (sandbox_error)
            return
        k = msg["slot"]
        old = self.slots.pop(k, None)
        if old is not None:
            self._drop_slot(old, "sandbox slot replaced")
        slot = Slot(socket.socket(fileno=fds[0]), msg["pid"])
        self._open_cgroup_files(k, slot)
        self.slots[k] = slot
        self.sel.register(slot.sock, selectors.EVENT_READ, ("slot", k))

    def _open_cgroup_files(self, k: int, slot: Slot) -> None:
        cg = self.cfg["cgroup"]
        if "memcg" not in self.plan.features:
            return
        d = cg["memory_fd"]
        v2 = cg["version"] == 2
        names = ("memory.max", "memory.events") if v2 else ("memory.limit_in_bytes", "memory.oom_control")
        slot.mem_fd = os.open(f"slot-{k}/{names[0]}", os.O_WRONLY | os.O_CLOEXEC, dir_fd=d)
        slot.events_fd = os.open(f"slot-{k}/{names[1]}", os.O_RDONLY | os.O_CLOEXEC, dir_fd=d)
        if cg["version"] == 1 and cg.get("swap"):
            slot.memsw_fd = os.open(f"slot-{k}/memory.memsw.limit_in_bytes", os.O_WRONLY | os.O_CLOEXEC, dir_fd=d)

    def _drop_slot(self, slot: Slot, why: str) -> None:
        if slot.run is not None:
            self._finish(slot.run, error=why, slot=slot)
        if slot.prepared is not None:
            slot.prepared.close()
            slot.prepared = None
        self.sel.unregister(slot.sock)
        slot.sock.close()
        for fd in (slot.mem_fd, slot.memsw_fd, slot.events_fd):
            if fd >= 0:
                os.close(fd)

    def on_slot(self, k: int) -> None:
        slot = self.slots[k]
        try:
            msg, fds = _zygote.recv_msg(slot.sock)
        except OSError:
            msg, fds = None, []
        if msg is None:  # the zygote died; the template reaps it and sends a replacement
            self.slots.pop(k)
            self._drop_slot(slot, "sandbox slot died during the run")
            return
        if msg["op"] == "prepared" and len(fds) == 3:
            sockets = socket.socket(fileno=fds[0]), socket.socket(fileno=fds[1])
            slot.prepared = Prepared(msg["seq"], msg["pid"], msg["workdir"], *sockets, fds[2])
            return
        for fd in fds:
            os.close(fd)
        if msg["op"] == "failed":
            self.failed = msg["error"]
        elif msg["op"] == "zygote":
            slot.pid = msg["pid"]
        elif msg["op"] == "reaped":
            slot.reaped_seq = max(slot.reaped_seq, msg["seq"])
            if slot.run is not None and slot.run.prep.seq == msg["seq"]:
                slot.run.reaped = True
                self._maybe_over(slot.run)

    # -- runs

    def start(self, req: dict, k: int) -> None:
        slot = self.slots[k]
        prep, slot.prepared = slot.prepared, None
        assert prep is not None
        run = Run(req["id"], k, req, prep)
        fds_for_run: list[int] = []
        try:
            memfd = os.memfd_create("grporoc-request", os.MFD_CLOEXEC)
            fds_for_run.append(memfd)
            os.write(memfd, pickle.dumps(self._request_for_run(req), protocol=pickle.HIGHEST_PROTOCOL))
            for name in ("stdout", "stderr", "report", "setup"):
                r, w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
                os.set_blocking(w, True)
                run.pipes[name] = r
                fds_for_run.append(w)
            run.oom_before = self._set_memory(slot, req["memory_mb"])
            try:
                socket.send_fds(prep.snippet, [b"go"], fds_for_run)  # straight to the prepared snippet process
            except OSError as e:
                os.write(fds_for_run[-1], f"the prepared snippet process is gone: {e!r}".encode())
        except OSError as e:
            for fd in run.pipes.values():
                os.close(fd)
            prep.close()
            self.reply(_status.error_reply(run.id, f"could not start the run: {e!r}"))
            return
        finally:
            for fd in fds_for_run:
                os.close(fd)
        for name, fd in run.pipes.items():
            self.sel.register(fd, selectors.EVENT_READ, ("pipe", (run, name)))
        self.sel.register(prep.ctl, selectors.EVENT_READ, ("ctl", run))
        self.sel.register(prep.pidfd, selectors.EVENT_READ, ("exit", run))
        run.deadline = time.monotonic() + SETUP_TIMEOUT_S
        slot.run = run

    def _request_for_run(self, req: dict) -> dict:
        return {
            "code": req["code"],
            "stdin": req["stdin"].encode("utf-8", "surrogatepass"),  # never fails, unlike strict or surrogateescape
            "memory_mb": req["memory_mb"],
            "cpu_limit_s": int(-(-req["timeout_s"] // 1)) + 1,
            "max_open_files": self.cfg["max_open_files"],
        }

    def _set_memory(self, slot: Slot, memory_mb: int) -> int:
        """Sets the slot's memory limit for the next run; returns its OOM-kill count so far."""
        if slot.mem_fd < 0:
            return 0
        limit = str((memory_mb + CGROUP_HEADROOM_MB) << 20).encode()
        if slot.memsw_fd >= 0:  # v1 keeps memory+swap >= memory: write in the order that keeps it so
            try:
                os.pwrite(slot.mem_fd, limit, 0)
                os.pwrite(slot.memsw_fd, limit, 0)
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
                os.pwrite(slot.memsw_fd, limit, 0)
                os.pwrite(slot.mem_fd, limit, 0)
        else:
            os.pwrite(slot.mem_fd, limit, 0)
        return self._oom_kills(slot)

    @staticmethod
    def _oom_kills(slot: Slot | None) -> int:
        if slot is None or slot.events_fd < 0:
            return 0
        for line in os.pread(slot.events_fd, 4096, 0).decode().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def on_pipe(self, run: Run, name: str) -> None:
        fd = run.pipes[name]
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            return
        if not chunk:
            self._close_pipe(run, name)
            return
        buf = run.bufs[name]
        buf += chunk
        if name == "setup" and buf == b"ok" and run.killed_for is None:
            run.started = time.monotonic()  # the snippet's own time starts now
            run.deadline = run.started + run.req["timeout_s"]
        if name in ("stdout", "stderr") and len(buf) > self.cap:
            self._kill(run, "output_limit")
        elif name == "report" and len(buf) >= MAX_REPORT:
            self._close_pipe(run, name)  # bounded: the snippet's further writes fail with EPIPE
        elif name == "setup" and len(buf) >= MAX_SETUP:
            self._close_pipe(run, name)

    def _close_pipe(self, run: Run, name: str) -> None:
        fd = run.pipes.pop(name, None)
        if fd is not None:
            self.sel.unregister(fd)
            os.close(fd)

    def _forget(self, fileobj: socket.socket | int) -> None:
        if fileobj in self.sel.get_map() if isinstance(fileobj, int) else fileobj.fileno() in self.sel.get_map():
            self.sel.unregister(fileobj)

    def on_ctl(self, run: Run) -> None:
        try:
            data = run.prep.ctl.recv(1 << 16, socket.MSG_DONTWAIT)
        except OSError:
            return
        if data:
            run.report.update(pickle.loads(data))
        else:
            self._forget(run.prep.ctl)

    def on_exit(self, run: Run) -> None:
        """The run's init has exited: with a PID namespace, every process of the run is gone with it."""
        self._forget(run.prep.pidfd)
        run.init_exited = True
        self._maybe_over(run)

    def _maybe_over(self, run: Run) -> None:
        if run.init_exited and (self.pidns or run.reaped):
            self._finish(run)

    def _kill(self, run: Run, why: str) -> None:
        if run.killed_for is not None:
            return
        run.killed_for, run.killed_at = why, time.monotonic()
        try:
            if not self.pidns:
                # The run's process group (the init leads it; the snippet and its children are in it) at once: a fork
                # bomb cannot outrun that. What left the group (setsid) the init's or zygote's subreaper sweep gets.
                os.killpg(run.prep.pid, signal.SIGKILL)
            signal.pidfd_send_signal(run.prep.pidfd, signal.SIGKILL)  # the init: its PID namespace goes with it
        except OSError:
            pass
        slot = self.slots.get(run.slot)
        if slot is not None and slot.mem_fd >= 0:
            # Dying processes of a run at its memory limit would thrash in reclaim; without a limit they just go.
            # (The next run sets its own.)
            try:
                os.pwrite(slot.mem_fd, b"max" if self.cfg["cgroup"]["version"] == 2 else b"-1", 0)
            except OSError:
                pass

    def check_deadlines(self, now: float) -> None:
        for k, slot in list(self.slots.items()):
            run = slot.run
            if run is None:
                continue
            if run.killed_for is None and now >= run.deadline:
                self._kill(run, "timeout" if run.started else "setup_timeout")
            elif run.killed_for is not None and now >= run.killed_at + KILL_GRACE_S:
                # The run is not over yet: kill its zygote (the run dies with it) and get a new one.
                _zygote.send_msg(self.template, {"op": "kill-slot", "slot": k})
                self.slots.pop(k)
                self._drop_slot(slot, "sandbox slot stopped responding; killed")

    def _finish(self, run: Run, error: str | None = None, slot: Slot | None = None) -> None:
        """Drains what is left in the run's pipes (every writer is gone), classifies it and replies. With ``error``
        the machinery failed (its slot died): sandbox_error, unless the run's cgroup OOM-killed something, which
        means the run used up its memory (the kernel may pick the zygote too): memory_error."""
        now = time.monotonic()
        for name in list(run.pipes):
            while name in run.pipes:
                before = len(run.bufs[name])
                self.on_pipe(run, name)  # reads a chunk, or closes the pipe at EOF or past its bound
                if name in run.pipes and len(run.bufs[name]) == before:
                    break  # nothing more now (a writer survives only when the machinery itself failed)
            self._close_pipe(run, name)
        self.on_ctl(run)
        self._forget(run.prep.ctl)
        self._forget(run.prep.pidfd)
        run.prep.close()
        slot = slot or self.slots.get(run.slot)
        if slot is not None and slot.run is run:
            slot.run = None
        if error is not None and self._oom_kills(slot) <= run.oom_before:
            self.reply(_status.error_reply(run.id, error))
            return
        self.reply(self._classify(run, slot, now))

    def _classify(self, run: Run, slot: Slot | None, now: float) -> dict:
        wait_status = run.report.get("status")
        if wait_status is None and run.killed_for is not None:
            wait_status = signal.SIGKILL  # we killed the run's init; the snippet's process died with it
        setup = bytes(run.bufs["setup"])
        setup_error = None
        if setup != b"ok":
            if run.killed_for == "setup_timeout":
                setup_error = f"set-up took longer than {SETUP_TIMEOUT_S:g}s"
            else:
                setup_error = (
                    setup.decode("utf-8", "replace")
                    or run.report.get("failed")
                    or f"the run's process died during set-up ({_status.exit_code(wait_status)})"
                )
        ev = _status.Evidence(
            wait_status=wait_status,
            killed_for=run.killed_for if run.killed_for in ("timeout", "output_limit") else None,
            cpu_s=run.report.get("cpu", 0.0),
            cpu_limit_s=float(int(-(-run.req["timeout_s"] // 1)) + 1),
            oom_kills=self._oom_kills(slot) - run.oom_before,
            setup_error=setup_error,
            report=bytes(run.bufs["report"]).decode("utf-8", "replace"),
        )
        status, detail = _status.classify(ev)
        return _status.result(
            run.id,
            status,
            detail,
            _status.exit_code(wait_status) if setup_error is None else None,
            bytes(run.bufs["stdout"][: self.cap]),
            bytes(run.bufs["stderr"][: self.cap]),
            (now - run.started) if run.started else 0.0,
        )

    def reply(self, obj: dict) -> None:
        send_frame(self.host, obj)

    # -- loop

    def on_host(self) -> bool:
        msg = recv_frame(self.host)
        if not isinstance(msg, dict) or msg.get("op") == "shutdown":
            return False
        if msg["op"] == "run":
            self.pending.append(msg)
        elif msg["op"] == "stats":
            self.reply(
                {
                    "id": msg["id"],
                    "stats": {
                        "active": sum(s.run is not None for s in self.slots.values()),
                        "queued": len(self.pending),
                        "workdirs": self._left_workdirs(),
                        "slots": len(self.slots),
                        "zygotes": sorted(s.pid for s in self.slots.values()),
                    },
                }
            )
        return True

    def _left_workdirs(self) -> int:
        """Run directories of runs already reaped (runs without scratch tmpfs: a leak). A slot's directories are
        ``run-{slot}-{zygote pid}-{seq}``; those after the last reaped run are its prepared and running runs'."""
        if "scratch" in self.plan.features:
            return 0
        left = 0
        for name in os.listdir(self.cfg["workdir_base"]):
            parts = name.split("-")
            slot = self.slots.get(int(parts[1])) if len(parts) == 4 and parts[1].isdigit() else None
            live = slot is not None and parts[2] == str(slot.pid) and int(parts[3]) > slot.reaped_seq
            left += not live
        return left

    def dispatch(self, kind: str, arg: object) -> bool:
        if kind == "host":
            return self.on_host()
        if kind == "template":
            self.on_template()
        elif kind == "slot":
            if arg in self.slots:
                self.on_slot(arg)  # type: ignore[arg-type]
        elif kind == "pipe":
            run, name = arg  # type: ignore[misc]
            if name in run.pipes:
                self.on_pipe(run, name)
        elif kind == "ctl":
            self.on_ctl(arg)  # type: ignore[arg-type]
        elif kind == "exit":
            self.on_exit(arg)  # type: ignore[arg-type]
        return True

    def wait_ready(self, timeout_s: float) -> None:
        """Until every slot has a prepared run (or something failed)."""
        deadline = time.monotonic() + timeout_s
        while self.failed is None and (
            len(self.slots) < self.cfg["slots"] or any(s.prepared is None for s in self.slots.values())
        ):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.failed = SLOTS_TIMEOUT
                return
            for key, _ in self.sel.select(remaining):
                kind, arg = key.data
                if kind in ("template", "slot"):
                    self.dispatch(kind, arg)

    def serve(self) -> None:
        self.serving = True
        while True:
            free = [k for k, s in self.slots.items() if s.prepared is not None and s.run is None]
            while self.pending and free:
                self.start(self.pending.popleft(), free.pop())
            deadlines = [s.run.killed_at + KILL_GRACE_S if s.run.killed_for else s.run.deadline
                         for s in self.slots.values() if s.run is not None]  # fmt: skip
            timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
            for key, _ in self.sel.select(timeout):
                if not self.dispatch(*key.data):
                    return
            self.check_deadlines(time.monotonic())


# ----------------------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------------------


def make_plan(cfg: dict, server: set[str], layers: set[str]) -> tuple[_confine.RunPlan, set[str]]:
    """The run plan and the pool's full feature set from what the server and the probe found and the config allows."""
    features = set(server)
    features |= {f for f in layers if f in {"pid", "runnet", "ipc", "scratch", "seccomp"}}
    cg = cfg["cgroup"] or {}
    if cg.get("memory_fd") is not None:
        features.add("memcg")
    if cg.get("pids_fd") is not None:
        features.add("pidcg")
    features -= {LAYERS[name] for name in cfg["disable"]}
    plan = _confine.RunPlan(
        features=frozenset(features),
        run_uid=cfg["run_uid"] if "uid" in features else None,
        setgroups="userns" not in features,
        tmpfs_mb=cfg["tmpfs_mb"],
        seccomp_bpf=cfg["seccomp_bpf"],
        drop_caps=os.geteuid() == 0,
        env=cfg["env"],
        limits={k: cfg[k] for k in ("max_file_bytes", "max_open_files", "max_processes")},
    )
    return plan, features


def main() -> None:
    host = socket.socket(fileno=int(sys.argv[1]))
    os.set_inheritable(host.fileno(), False)
    parent = os.getppid()
    _linux.prctl(_linux.PR_SET_PDEATHSIG, signal.SIGKILL)  # the server never outlives the host process
    if os.getppid() != parent:
        return
    cfg = recv_frame(host)
    assert isinstance(cfg, dict)
    if (cfg["cgroup"] or {}).get("memory_fd") is not None:
        # Inherited by the template and zygotes: on a run's OOM the kernel kills the run, never the machinery (each
        # run resets its own score, see _confine). Needs CAP_SYS_RESOURCE; without it nothing is exempt.
        try:
            _linux.write_file("/proc/self/oom_score_adj", "-1000")
        except OSError:
            pass
    for name in cfg.get("preload", ()):
        __import__(name)  # shared copy-on-write by every run; a failing preload is a start-up error
    try:
        server, notes = setup_isolation(cfg)
        layers, layer_notes = probe_run_layers(cfg, server)
    except OSError as e:
        send_frame(host, {"ready": False, "error": f"isolation set-up failed: {e!r}"})
        return
    plan, features = make_plan(cfg, server, layers)
    notes += layer_notes
    base = cfg["workdir_base"] if "mount" not in features else "/tmp/grporoc-runs"
    os.makedirs(base, mode=0o711, exist_ok=True)
    # Zygotes join their slot's cgroup in each hierarchy whose controller is in force (one with cgroup v2).
    cg = cfg["cgroup"] or {}
    dirfds = {cg[key] for key, feat in (("memory_fd", "memcg"), ("pids_fd", "pidcg")) if feat in features}
    procs = tuple((fd, "slot-{k}/cgroup.procs") for fd in sorted(dirfds))
    sp = _zygote.SlotPlan(
        plan=plan,
        slots=cfg["slots"],
        slot_userns="userns" in features and "slot-userns" in layers,
        cgroup_procs=procs,
        workdir_base=base,
        run_uid=plan.run_uid,
    )
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    gc.collect()
    pid = os.fork()
    if pid == 0:  # the template: forked before any request was read
        host.close()
        ours.close()
        _zygote.template_main(theirs, sp, os.getppid())
    theirs.close()
    broker = Broker(host, ours, cfg, plan)
    broker.wait_ready(cfg["start_timeout_s"])
    if broker.failed:
        # out of time (a loaded machine) is no verdict on the isolation: the host retries instead of falling back
        send_frame(host, {"ready": False, "error": broker.failed, "interrupted": broker.failed == SLOTS_TIMEOUT})
        return
    send_frame(host, {"ready": True, "pid": os.getpid(), "features": sorted(features), "notes": notes})
    broker.serve()


if __name__ == "__main__":
    try:
        main()
    except (BrokenPipeError, ConnectionResetError):
        pass
    except OSError as e:
        if e.errno != errno.EPIPE:
            raise
