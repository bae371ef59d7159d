"""The run's own process: confinement in readable steps, a handshake, then the snippet (stdlib only).

A slot zygote forks the run's init ahead of its request, as PID 1 of a fresh PID namespace when available. The init
makes the run's namespaces and scratch tmpfs, loads the seccomp filter and forks the snippet's process (which inherits
the filter), which confines itself right away (``prepare``: fixed rlimits, no capabilities, the interpreter's
environment), so that none of that is on the path of a call. The snippet's process then waits on its socket for the
one request it will ever serve (``start``): the zygote forwards the descriptors the broker made for it, the request
(a memfd: code, stdin, limits), stdout, stderr, the report pipe (fd 3 of the snippet, see ``_status``) and the set-up
pipe. Forked before its request existed, neither process holds any other request's data.

Any failure before the snippet starts is the machinery's: the step's error goes to the set-up pipe (from the init, by
way of the zygote) and the run is ``sandbox_error``. After the last step the process writes ``ok`` to the set-up pipe
and closes it, and only then runs the snippet: nothing the snippet does can reach the set-up pipe, so a snippet can
never claim a set-up failure.

Nothing here ever returns to the zygote's code: the process ends in ``os._exit`` whatever happens.
"""

from __future__ import annotations

import fcntl
import gc
import os
import pickle
import resource
import signal
import socket
import sys
import tempfile
from dataclasses import dataclass

try:  # package mode (host-side imports and tests) or script mode (the fork server's interpreter)
    from . import _linux, _runner
except ImportError:
    import _linux
    import _runner

_exit = os._exit  # bound now: a snippet that replaces os._exit cannot change how this process ends
SETUP_FD = 4
NFDS = 5  # request, stdout, stderr, report, setup
#: Where the run's scratch tmpfs is mounted; /var/tmp and /dev/shm are binds of it (one size limit for all three).
SCRATCH = "/tmp"
SCRATCH_BINDS = ("/var/tmp", "/dev/shm")


@dataclass(frozen=True)
class RunPlan:
    """What every run of a pool does (decided once by the broker from the features it found)."""

    features: frozenset[str]
    """Layers in force (see ``_broker.make_plan``): runnet, ipc, mount, pid, scratch, memcg, pidcg, seccomp, uid..."""
    run_uid: int | None
    """Unprivileged uid the snippet becomes (root hosts), None to stay as is (without capabilities)."""
    setgroups: bool
    """Whether setgroups() is allowed (not in a user namespace whose setgroups is denied)."""
    tmpfs_mb: int
    seccomp_bpf: bytes | None
    drop_caps: bool
    """Whether there are capabilities to drop (root, or root of a user namespace)."""
    env: dict[str, str]
    """The snippet's whole environment (HOME, TMPDIR and PWD are added: its working directory)."""
    limits: dict[str, int]
    """max_file_bytes, max_open_files, max_processes."""


def init_main(plan: RunPlan, ctl: socket.socket, snippet_sock: socket.socket, workdir: str | None) -> None:
    """Body of the run's init (PID 1 of the run's PID namespace when available). Never returns.

    It makes the run's namespaces and scratch space, forks the snippet's process (PID 2, so that the snippet is an
    ordinary process: its own signals reach it, orphans are not its to reap), gives up every privilege, waits for the
    snippet's process and reports its wait status and CPU time on ``ctl``. Its exit then makes the kernel kill whatever
    is left in the namespace. The snippet cannot reach it: signals from inside the namespace to its init are ignored,
    its memory is not dumpable, it holds none of the snippet's descriptors.
    """
    try:
        _step_process()
        if "pid" not in plan.features:
            _linux.prctl(_linux.PR_SET_CHILD_SUBREAPER, 1)  # what the snippet leaves behind comes back here
        _step_namespaces(plan)
        cwd = _step_scratch(plan, workdir)
        # Loaded once, here, for both processes: the snippet's inherits it at the fork (every load costs ~0.7 ms of
        # CPU, mostly the kernel building the filter's per-syscall action cache), and nothing after this point, in
        # either process, needs a call the filter denies.
        _step_seccomp(plan)
        pid = os.fork()
    except BaseException as e:  # noqa: BLE001 - any failure before the snippet is the machinery's
        _send(ctl, {"failed": f"{type(e).__name__}: {e}"})
        _exit(125)
    if pid == 0:
        ctl.close()
        snippet_main(plan, snippet_sock, cwd)  # never returns
    snippet_sock.close()
    try:
        _linux.prctl(_linux.PR_SET_DUMPABLE, 0)
        _step_identity(plan)
        _linux.prctl(_linux.PR_SET_PDEATHSIG, signal.SIGKILL)  # again: a change of uid clears it
        _, status, ru = os.wait4(pid, 0)
        if "pid" not in plan.features:
            _linux.kill_descendants(os.getpid())  # without a PID namespace we are the run's subreaper
        _send(ctl, {"status": status, "cpu": ru.ru_utime + ru.ru_stime})
    finally:
        _exit(0)


def _send(sock: socket.socket, obj: dict) -> None:
    try:
        sock.send(pickle.dumps(obj))
    except OSError:
        pass


def snippet_main(plan: RunPlan, sock: socket.socket, cwd: str) -> None:
    """Body of the snippet's process. Never returns."""
    failure: BaseException | None = None
    try:
        _linux.prctl(_linux.PR_SET_PDEATHSIG, signal.SIGKILL)  # dies with the run's init...
        prepare(plan)
        _linux.prctl(_linux.PR_SET_PDEATHSIG, signal.SIGKILL)  # ...also after the change of uid, which cleared it
    except BaseException as e:  # noqa: BLE001 - any failure before the snippet is the machinery's
        failure = e
    try:
        sock.send(b"ready")  # (or failed: the request's set-up pipe gets the error)
    except OSError:
        pass  # the request came first: its descriptors are already queued
    try:
        _, fds, _, _ = socket.recv_fds(sock, 64, NFDS)
        sock.close()
    except BaseException:  # noqa: BLE001 - the zygote is gone
        _exit(125)
    if len(fds) != NFDS:
        _exit(125)  # the zygote closed without a request (the pool is closing)
    if failure is not None:
        _fail(fds[4], failure)
    req = start(fds, cwd)
    rc = 1
    try:
        os.write(SETUP_FD, b"ok")
        os.close(SETUP_FD)
        rc = _runner.run_snippet(req["code"], report_fd=3)
        _runner.flush_std()
    finally:
        _exit(rc)


def _fail(fd: int, e: BaseException) -> None:
    try:
        os.write(fd, f"{type(e).__name__}: {e}".encode("utf-8", "replace")[:2000])
    finally:
        _exit(125)


def prepare(plan: RunPlan) -> None:
    """The snippet process's steps that do not need the request (its seccomp filter came with the fork)."""
    _step_fixed_limits(plan)
    _step_identity(plan)
    _step_interpreter(plan, os.getcwd())


def start(fds: list[int], cwd: str) -> dict:
    """The request's steps (unprivileged and filtered by now: only descriptors and lowering limits are left)."""
    try:
        req = _read_request(fds[0])
        _step_stdio(req, fds)
    except BaseException as e:  # noqa: BLE001
        _fail(fds[4], e)
    try:
        _step_request_limits(req)
    except BaseException as e:  # noqa: BLE001
        _fail(SETUP_FD, e)
    return req


def _step_process() -> None:
    """Own session; dies with its zygote; default signal dispositions."""
    signal.set_wakeup_fd(-1)
    os.setsid()
    _linux.prctl(_linux.PR_SET_PDEATHSIG, signal.SIGKILL)
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD, signal.SIGALRM, signal.SIGXCPU, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # as CPython sets it: a broken pipe is an exception
    # Past RLIMIT_FSIZE a write fails with EFBIG (an exception in the snippet) instead of a SIGXFSZ death.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def _step_namespaces(plan: RunPlan) -> None:
    """Fresh mount, network, IPC and UTS namespaces; a read-only procfs of the run's own PID namespace; the run
    out of the OOM killer's protection."""
    f = plan.features
    flags = (
        (_linux.CLONE_NEWNS if f & {"pid", "scratch"} else 0)
        | (_linux.CLONE_NEWNET if "runnet" in f else 0)
        | (_linux.CLONE_NEWIPC | _linux.CLONE_NEWUTS if "ipc" in f else 0)
    )
    if flags:
        _linux.unshare(flags)
    if flags & _linux.CLONE_NEWNS:
        _linux.mount(None, "/", None, _linux.MS_REC | _linux.MS_PRIVATE)  # nothing of the run propagates out
        nodev = _linux.MS_NOSUID | _linux.MS_NODEV | _linux.MS_NOEXEC
        _linux.mount("proc", "/proc", "proc", nodev)  # of the run's PID namespace (the server's without one)
        _oom_score(plan)
        _linux.mount(None, "/proc", None, _linux.MS_REMOUNT | _linux.MS_BIND | _linux.MS_RDONLY | nodev)
    else:
        _oom_score(plan)


def _oom_score(plan: RunPlan) -> None:
    if "memcg" in plan.features:
        # When the run's cgroup runs out of memory the kernel kills one of its processes: a run's process first (1000,
        # the most preferred), its zygote last (-1000 where the server may set it, see _broker). Written while
        # privileged, 1000 is also the run's floor: the snippet cannot make itself less preferred. (Should the
        # zygote still be chosen, the broker sees the OOM kill in the cgroup's counter: memory_error all the same.)
        _linux.write_file("/proc/self/oom_score_adj", "1000")


def _step_scratch(plan: RunPlan, workdir: str | None) -> str:
    """The run's scratch space and working directory: its own size-limited tmpfs (gone with the run's mount namespace,
    nothing to delete), or without one the host directory the zygote made."""
    if "scratch" in plan.features:
        flags = _linux.MS_NOSUID | _linux.MS_NODEV
        _linux.mount("tmpfs", SCRATCH, "tmpfs", flags, f"size={plan.tmpfs_mb}m,mode=1777")
        for path in SCRATCH_BINDS:
            _linux.mount(SCRATCH, path, None, _linux.MS_BIND)
        workdir = SCRATCH
    assert workdir is not None
    os.chdir(workdir)
    return workdir


def _setrlimit(what: int, soft: int, hard: int) -> None:
    """setrlimit, never above the inherited hard limit (raising one would need CAP_SYS_RESOURCE, which even root may
    lack); RLIM_INFINITY (-1) means that inherited hard limit."""
    cap = resource.getrlimit(what)[1]

    def clamp(value: int) -> int:
        if value == resource.RLIM_INFINITY:
            return cap
        return value if cap == resource.RLIM_INFINITY else min(value, cap)

    resource.setrlimit(what, (clamp(soft), clamp(hard)))


def _step_fixed_limits(plan: RunPlan) -> None:
    lim = plan.limits
    # With a pids cgroup per run the per-uid RLIMIT_NPROC must not bind: it counts every run of every pool.
    nproc = resource.RLIM_INFINITY if "pidcg" in plan.features else lim["max_processes"]
    _setrlimit(resource.RLIMIT_CORE, 0, 0)
    _setrlimit(resource.RLIMIT_FSIZE, lim["max_file_bytes"], lim["max_file_bytes"])
    _setrlimit(resource.RLIMIT_NPROC, nproc, nproc)


def _step_identity(plan: RunPlan) -> None:
    """No capabilities (and the unprivileged uid on root hosts); no_new_privs in every case."""
    if plan.run_uid is not None:
        _linux.drop_capabilities(plan.run_uid, setgroups=plan.setgroups)
    elif plan.drop_caps:
        _linux.drop_capabilities()
    else:
        _linux.prctl(_linux.PR_SET_NO_NEW_PRIVS, 1)


def _step_seccomp(plan: RunPlan) -> None:
    """The filter, under no_new_privs (needed to load one without CAP_SYS_ADMIN; this process never execs)."""
    if plan.seccomp_bpf is not None and "seccomp" in plan.features:
        _linux.prctl(_linux.PR_SET_NO_NEW_PRIVS, 1)
        _linux.load_seccomp(plan.seccomp_bpf)


def _step_interpreter(plan: RunPlan, cwd: str) -> None:
    """The interpreter state a fresh ``python file.py`` would have: environment, cwd, argv, text streams (on fds 0-2,
    which ``_step_stdio`` points at the run's own pipes later)."""
    os.environ.clear()
    os.environ.update(plan.env)
    os.environ["HOME"] = os.environ["TMPDIR"] = os.environ["PWD"] = cwd
    tempfile.tempdir = None  # the server may have cached the host's temp dir
    sys.argv = [_runner.FILENAME]
    gc.enable()  # the zygote runs without; the snippet gets a normal interpreter
    sys.stdin = open(0, encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
    sys.stdout = open(1, "w", encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115


def _read_request(fd: int) -> dict:
    size = os.fstat(fd).st_size
    data = bytearray()
    while len(data) < size:
        chunk = os.pread(fd, size - len(data), len(data))
        if not chunk:
            break
        data += chunk
    return pickle.loads(bytes(data))


def _step_stdio(req: dict, fds: list[int]) -> None:
    """stdin (a memfd holding the request's input), stdout, stderr, the report pipe as fd 3, the set-up pipe as fd 4;
    every other descriptor closed."""
    stdin = os.memfd_create("stdin", 0)
    view = memoryview(req["stdin"])
    while view:
        view = view[os.write(stdin, view) :]
    os.lseek(stdin, 0, os.SEEK_SET)
    # Copies above every descriptor in use first, so that no dup2 below overwrites a source not yet moved.
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 64) for fd in (stdin, *fds[1:])]
    for dst, src in enumerate(high):
        os.dup2(src, dst)
    for fd in (3, SETUP_FD):
        os.set_inheritable(fd, False)  # the snippet's own children get neither
    os.closerange(SETUP_FD + 1, 1 << 20)


def _step_request_limits(req: dict) -> None:
    mem = req["memory_mb"] << 20
    cpu = req["cpu_limit_s"]
    _setrlimit(resource.RLIMIT_AS, mem, mem)
    _setrlimit(resource.RLIMIT_DATA, mem, mem)
    _setrlimit(resource.RLIMIT_CPU, cpu, cpu + 1)
    _setrlimit(resource.RLIMIT_NOFILE, req["max_open_files"], req["max_open_files"])
