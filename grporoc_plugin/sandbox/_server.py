"""Fork server: a pre-warmed interpreter that forks one supervised child per execution (stdlib only).

Started by ``SandboxPool`` as ``python -I _server.py FD`` (optionally under bubblewrap) with a scrubbed environment.
It never runs untrusted code itself. Process tree per execution::

    server  --fork-->  run-init (PID 1 of a fresh PID namespace when available, else a child subreaper)
                          --fork-->  snippet process (own session, rlimits, no capabilities, clean env)

The run-init collects the snippet's stdout/stderr from pipes (capped), enforces the wall-clock deadline, classifies the
outcome and sends it back. When it exits, the kernel kills every process left in its PID namespace, which is how
detached (setsid / double-fork) grandchildren die; without a PID namespace it kills its reparented descendants itself.

Protocol on the inherited socket: frames of ``8-byte big-endian length + pickle``. The host is trusted; frames the
server sends never contain objects built by the snippet (only bytes it wrote), so unpickling them is safe.
"""

from __future__ import annotations

import ctypes
import errno
import gc
import math
import os
import pickle
import resource
import selectors
import shutil
import signal
import socket
import struct
import sys
import tempfile
import time

if __package__:
    from grporoc_plugin.sandbox import _runner
else:  # run as a script by the pool (stdlib only; the package may not be importable by the sandbox interpreter)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import _runner  # preloaded so a forked child pays nothing for it

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REC, MS_PRIVATE = 0x4000, 1 << 18
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS, PR_CAPBSET_DROP, PR_SET_CHILD_SUBREAPER = 1, 38, 24, 36
SYS_MOUNT_SETATTR, AT_RECURSIVE, MOUNT_ATTR_RDONLY = 442, 0x8000, 0x1
SYS_CAPSET = 126
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}.get(os.uname().machine, 155)
MS_BIND, MNT_DETACH = 0x1000, 2
PRIVATE_SCRATCH = ("/var/tmp", "/dev/shm", "/tmp")  # /tmp last: binding it hides the run directory's path
AT_FDCWD = -100
HEADER = struct.Struct(">Q")
SERVER_GRACE_S = 2.0  # backstop: the server kills a run-init that outlives its own deadline by this much

libc = ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unshare(flags: int) -> None:
    _check(libc.unshare(ctypes.c_int(flags)), "unshare")


def setns(fd: int, nstype: int) -> None:
    _check(libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), "setns")


def mount(src: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = [None if s is None else s.encode() for s in (src, target, fstype, data)]
    _check(libc.mount(enc[0], enc[1], enc[2], ctypes.c_ulong(flags), enc[3]), f"mount {target}")


def prctl(option: int, arg: int) -> None:
    _check(libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg), 0, 0, 0), "prctl")


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def make_tree_readonly(path: str) -> None:
    """mount_setattr(AT_RECURSIVE, RDONLY): every mount under ``path`` read-only in this mount namespace."""
    attr = _MountAttr(MOUNT_ATTR_RDONLY, 0, 0, 0)
    ret = libc.syscall(
        ctypes.c_long(SYS_MOUNT_SETATTR),
        ctypes.c_int(AT_FDCWD),
        path.encode(),
        ctypes.c_uint(AT_RECURSIVE),
        ctypes.byref(attr),
        ctypes.c_size_t(ctypes.sizeof(attr)),
    )
    _check(ret, "mount_setattr")


def pivot_root(new_root: str, put_old: str) -> None:
    _check(libc.syscall(ctypes.c_long(SYS_PIVOT_ROOT), new_root.encode(), put_old.encode()), "pivot_root")


def umount_detach(target: str) -> None:
    _check(libc.umount2(target.encode(), ctypes.c_int(MNT_DETACH)), f"umount {target}")


def build_root(layout: dict, tmpfs_mb: int) -> None:
    """Makes this mount namespace's root an empty read-only tmpfs holding only ``layout`` (see layout.py).

    Staging as bubblewrap does: a tmpfs on /tmp becomes the root with the host's root under /oldroot, the new root is
    assembled in /newroot from /oldroot/<path>, then swapped in and the host's root detached.
    """
    mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
    os.chdir("/tmp")
    os.mkdir("newroot", 0o755)
    os.mkdir("oldroot", 0o755)
    pivot_root(".", "oldroot")
    os.chdir("/")
    new, old = "/newroot", "/oldroot"
    mount("tmpfs", new, "tmpfs", MS_NOSUID, "size=1m,mode=0755")
    for src, path in layout["binds"]:
        dst = new + path
        if os.path.isdir(old + src):
            os.makedirs(dst, 0o755, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(dst), 0o755, exist_ok=True)
            os.close(os.open(dst, os.O_CREAT | os.O_WRONLY, 0o644))
        mount(old + src, dst, None, MS_BIND | MS_REC)
    for path, target in layout["symlinks"]:
        os.makedirs(os.path.dirname(new + path), 0o755, exist_ok=True)
        os.symlink(target, new + path)
    os.makedirs(new + "/dev/shm", 0o755)
    for dev in ("null", "zero", "full", "random", "urandom"):
        os.close(os.open(f"{new}/dev/{dev}", os.O_CREAT | os.O_WRONLY, 0o666))
        mount(f"{old}/dev/{dev}", f"{new}/dev/{dev}", None, MS_BIND)
    for i, name in enumerate(("stdin", "stdout", "stderr")):
        os.symlink(f"/proc/self/fd/{i}", f"{new}/dev/{name}")
    os.symlink("/proc/self/fd", f"{new}/dev/fd")
    # The server's own view of processes (its run-inits mount a PID-namespace procfs over it for each run).
    os.makedirs(new + "/proc", 0o555)
    mount(old + "/proc", new + "/proc", None, MS_BIND | MS_REC)
    for path in ("/tmp", "/var/tmp"):
        os.makedirs(new + path, 0o755, exist_ok=True)
    make_tree_readonly(new)
    # Fresh writable, size-bounded tmpfs where programs expect scratch space; runs live in /tmp.
    for path in ("/tmp", "/var/tmp", "/dev/shm"):
        mount("tmpfs", new + path, "tmpfs", MS_NOSUID | MS_NODEV, f"size={tmpfs_mb}m,mode=1777")
    os.chdir(new)
    pivot_root(".", ".")  # the staging root (with the host's under it) now sits on top of the new root...
    umount_detach(".")  # ...and goes
    os.chdir("/")


def relocate_interpreter(relocations: list[list[str]]) -> None:
    """After ``build_root``: points this interpreter's paths (sys.path, prefixes, loaded packages' ``__path__``) that
    lay in a scratch directory to where the new root shows them (layout.sandbox_path), so imports keep working."""

    def moved(path: object) -> object:
        if isinstance(path, str):
            for src, dst in relocations:
                if path == src or path.startswith(src + "/"):
                    return dst + path[len(src) :]
        return path

    sys.path[:] = [moved(p) for p in sys.path]
    for name in ("executable", "_base_executable", "prefix", "exec_prefix", "base_prefix", "base_exec_prefix"):
        if hasattr(sys, name):
            setattr(sys, name, moved(getattr(sys, name)))
    for module in list(sys.modules.values()):
        attrs = getattr(module, "__dict__", None)
        if not isinstance(attrs, dict):
            continue
        if "__file__" in attrs:
            attrs["__file__"] = moved(attrs["__file__"])
        search = attrs.get("__path__")
        if isinstance(search, list):  # shared with __spec__.submodule_search_locations: lazy submodule imports
            search[:] = [moved(p) for p in search]
        spec = attrs.get("__spec__")
        if spec is not None and isinstance(getattr(spec, "origin", None), str):
            spec.origin = moved(spec.origin)
    sys.path_importer_cache.clear()


def can_switch_uid(uid: int) -> bool:
    """Whether a child can become ``uid`` (root in the host's user namespace can; a userns mapping only 0 cannot)."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            os._exit(0)
        except BaseException:  # noqa: BLE001
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def drop_capabilities(uid: int | None = None) -> None:
    """Empties the bounding set, becomes ``uid`` (when given), empties the permitted, effective and inheritable sets
    and sets no_new_privs: root without powers, or an unprivileged user that cannot regain any."""
    for cap in range(64):
        if libc.prctl(PR_CAPBSET_DROP, ctypes.c_ulong(cap), 0, 0, 0) != 0:
            break  # EINVAL past the last capability the kernel knows
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this thread
    data = (ctypes.c_uint32 * 6)()
    _check(libc.syscall(ctypes.c_long(SYS_CAPSET), header, data), "capset")
    prctl(PR_SET_NO_NEW_PRIVS, 1)


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
# Isolation set-up (once per server)
# ----------------------------------------------------------------------------------------------------------------------


def setup_isolation(cfg: dict) -> tuple[set[str], str, list[str]]:
    """Enters the namespaces the config asks for and the kernel allows; returns (features, run base dir, notes)."""
    features: set[str] = set()
    notes: list[str] = []
    mode = cfg["isolation"]
    if mode == "bwrap":
        features |= {"net", "mount"}  # bubblewrap already unshared the network and built a read-only root + tmpfs
    elif mode == "namespaces":
        if os.geteuid() != 0:
            uid, gid = os.geteuid(), os.getegid()
            try:
                unshare(CLONE_NEWUSER)
                with open("/proc/self/setgroups", "w") as f:
                    f.write("deny")
                with open("/proc/self/uid_map", "w") as f:
                    f.write(f"0 {uid} 1")
                with open("/proc/self/gid_map", "w") as f:
                    f.write(f"0 {gid} 1")
                features.add("userns")
            except OSError as e:
                notes.append(f"user namespace unavailable: {e}")
        try:
            unshare(CLONE_NEWNET)
            features.add("net")
        except OSError as e:
            notes.append(f"network namespace unavailable: {e}")
        try:
            unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS)
            mount(None, "/", None, MS_REC | MS_PRIVATE)
        except OSError as e:
            notes.append(f"mount namespace unavailable: {e}")
        else:
            # Past this point a failure leaves a half-built root: the server refuses to start instead of running there.
            build_root(cfg["fs"], cfg["tmpfs_mb"])
            relocate_interpreter(cfg["fs"]["relocate"])
            features.add("mount")
    if mode in ("bwrap", "namespaces"):
        # Probe a per-run PID namespace (needs CAP_SYS_ADMIN here, which root/userns/bwrap-as-root keep).
        try:
            own = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
            unshare(CLONE_NEWPID)
            pid = os.fork()
            if pid == 0:
                os._exit(0 if os.getpid() == 1 else 3)
            setns(own, CLONE_NEWPID)
            os.close(own)
            _, status = os.waitpid(pid, 0)
            if os.waitstatus_to_exitcode(status) == 0:
                features.add("pid")
        except OSError as e:
            notes.append(f"PID namespace unavailable: {e}")
    if "mount" in features and cfg["run_uid"] >= 0 and os.geteuid() == 0:
        # Snippets run as an unprivileged user: besides the hidden host, nothing root-owned is theirs to read or write.
        if can_switch_uid(cfg["run_uid"]):
            features.add("uid")
        else:
            notes.append(f"cannot switch snippets to uid {cfg['run_uid']}; they run as uid 0 without capabilities")
    base = cfg["workdir_base"] if "mount" not in features else "/tmp/grporoc-runs"
    os.makedirs(base, mode=0o711, exist_ok=True)
    return features, base, notes


# ----------------------------------------------------------------------------------------------------------------------
# Per-run processes
# ----------------------------------------------------------------------------------------------------------------------


def _snippet_child(req: dict, workdir: str, fds: tuple[int, int, int, int], features: set[str]) -> None:
    """Runs in the snippet process: confine, then execute. Never returns."""
    stdin_fd, out_w, err_w, status_w = fds
    try:
        os.setsid()
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD, signal.SIGALRM, signal.SIGXCPU, signal.SIGXFSZ):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # as CPython sets it: a broken pipe is an exception
        os.dup2(stdin_fd, 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        os.dup2(status_w, 3)
        os.set_inheritable(3, False)
        os.closerange(4, 1 << 16)
        os.chdir(workdir)
        mem = req["memory_mb"] << 20
        cpu = int(math.ceil(req["timeout_s"])) + 1
        fsize, nofile, nproc = req["max_file_bytes"], req["max_open_files"], req["max_processes"]
        limits = [
            (resource.RLIMIT_AS, mem, mem),
            (resource.RLIMIT_DATA, mem, mem),
            (resource.RLIMIT_CORE, 0, 0),
            (resource.RLIMIT_CPU, cpu, cpu + 1),
            (resource.RLIMIT_FSIZE, fsize, fsize),
            (resource.RLIMIT_NOFILE, nofile, nofile),
            (resource.RLIMIT_NPROC, nproc, nproc),
        ]
        for what, soft, hard in limits:
            resource.setrlimit(what, (soft, hard))
        if "uid" in features:
            drop_capabilities(req["run_uid"])
        elif os.geteuid() == 0 or "userns" in features:
            drop_capabilities()
        else:
            prctl(PR_SET_NO_NEW_PRIVS, 1)
        os.environ.clear()
        os.environ.update(req["env"])
        os.environ["HOME"] = os.environ["TMPDIR"] = os.environ["PWD"] = workdir
        tempfile.tempdir = None  # the server may have cached the host's /tmp
        sys.argv = [_runner.FILENAME]
        sys.stdin = open(0, encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
        sys.stdout = open(1, "w", encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
    except BaseException as e:  # noqa: BLE001 - confinement failed: never run the snippet unconfined
        try:
            os.write(2, f"sandbox setup failed: {e!r}".encode())
            os.write(3, b"__sandbox_setup__")
        finally:
            os._exit(125)
    rc = _runner.run_snippet(req["code"], status_fd=3)
    _runner.flush_std()
    os._exit(rc)


def _reap_all() -> bool:
    """Reaps every child (blocking); returns False if there was none."""
    found = False
    while True:
        try:
            os.waitpid(-1, 0)
            found = True
        except ChildProcessError:
            return found


def _kill_descendants(root_pid: int) -> None:
    """Without a PID namespace (we are their subreaper): SIGKILL every process whose parent chain reaches ``root_pid``.

    Repeats until none is left, so a fork bomb racing the scan is caught on a later pass (RLIMIT_NPROC bounds it).
    """
    if root_pid == os.getpid():
        try:
            os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return  # the common case: nothing escaped, no /proc scan needed
    for _ in range(200):
        children: dict[int, list[int]] = {}
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    stat = f.read()
                ppid = int(stat[stat.rfind(b")") + 2 :].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(name))
        found, stack = [], list(children.get(root_pid, []))
        while stack:
            p = stack.pop()
            found.append(p)
            stack.extend(children.get(p, []))
        if not found:
            return
        for p in found:
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
        if root_pid == os.getpid():
            while True:  # reap what we (the subreaper) inherited, without blocking on what is still dying
                try:
                    if os.waitpid(-1, os.WNOHANG)[0] == 0:
                        break
                except ChildProcessError:
                    break
        time.sleep(0.001)


def _remove_workdir(workdir: str, private_tmp: bool) -> None:
    """Unmounts the run directory's scratch binds (innermost first) and deletes it."""
    for path in reversed(PRIVATE_SCRATCH) if private_tmp else ():
        try:
            umount_detach(path)
        except OSError:
            pass
    shutil.rmtree(workdir, ignore_errors=True)


def _run_init(req: dict, workdir: str, result_w: int, features: set[str]) -> None:
    """Supervises one snippet (PID 1 of its namespace when available). Never returns."""
    t0 = time.monotonic()
    result: dict = {
        "id": req["id"],
        "status": "sandbox_error",
        "exit_code": None,
        "stdout": b"",
        "stderr": b"",
        "detail": "",
        "duration_s": 0.0,
    }
    gc.disable()  # short-lived supervisor: collecting would only touch (and copy) shared pages
    private_tmp = False
    try:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        if "pid" in features:
            # A procfs for this PID namespace only: the snippet cannot see (or read the environ of) any other process.
            unshare(CLONE_NEWNS)
            mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
            if "mount" in features:
                # The run directory is the run's /tmp, /var/tmp and /dev/shm: what it writes there is private to it,
                # counts against the shared tmpfs cap and is gone with the run (nothing persists for later runs).
                private_tmp = True
                for path in PRIVATE_SCRATCH:
                    mount(workdir, path, None, MS_BIND)
        else:
            prctl(PR_SET_CHILD_SUBREAPER, 1)
        stdin_fd = os.memfd_create("stdin", 0)
        os.write(stdin_fd, req["stdin"].encode("utf-8", "surrogateescape"))
        os.lseek(stdin_fd, 0, os.SEEK_SET)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        st_r, st_w = os.pipe()
        upid = os.fork()
        if upid == 0:
            _snippet_child(req, "/tmp" if private_tmp else workdir, (stdin_fd, out_w, err_w, st_w), features)
        for fd in (stdin_fd, out_w, err_w, st_w):
            os.close(fd)
        pidfd = os.pidfd_open(upid)
        cap = req["max_output_bytes"]
        bufs = {out_r: bytearray(), err_r: bytearray(), st_r: bytearray()}
        sel = selectors.DefaultSelector()
        for fd in bufs:
            os.set_blocking(fd, False)
            sel.register(fd, selectors.EVENT_READ)
        sel.register(pidfd, selectors.EVENT_READ)
        deadline = t0 + req["timeout_s"]
        status, wstatus, exited = None, None, False
        open_fds = set(bufs)
        while status is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                status = "timeout"
                break
            for key, _ in sel.select(remaining):
                fd = key.fd
                if fd == pidfd:
                    exited = True
                    continue
                try:
                    chunk = os.read(fd, 65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    sel.unregister(fd)
                    open_fds.discard(fd)
                    continue
                bufs[fd] += chunk
                if fd != st_r and len(bufs[fd]) > cap:
                    status = "output_limit"
            if exited and status is None:
                # Drain what the snippet left in the pipes; a surviving grandchild holding them open is not waited for.
                for fd in list(open_fds):
                    while len(bufs[fd]) <= cap:
                        try:
                            chunk = os.read(fd, 65536)
                        except BlockingIOError:
                            break
                        if not chunk:
                            break
                        bufs[fd] += chunk
                    if fd != st_r and len(bufs[fd]) > cap:
                        status = "output_limit"
                break
        if not exited or status is not None:
            try:
                os.killpg(upid, signal.SIGKILL)
            except OSError:
                pass
            try:
                os.kill(upid, signal.SIGKILL)
            except OSError:
                pass
        _, wstatus = os.waitpid(upid, 0)
        # Nothing of the run may outlive its result: kill and reap whatever is left (detached grandchildren included).
        if "pid" in features:
            try:
                os.kill(-1, signal.SIGKILL)  # from PID 1: every other process of this namespace
            except ProcessLookupError:
                pass
            _reap_all()
        else:
            _kill_descendants(os.getpid())
        _remove_workdir(workdir, private_tmp)
        code = os.waitstatus_to_exitcode(wstatus)
        exc_name = bytes(bufs[st_r]).decode("utf-8", "replace")
        if status is None:
            if code == 0:
                status = "ok"
            elif exc_name == "__sandbox_setup__":
                status = "sandbox_error"
                result["detail"] = bytes(bufs[err_r]).decode("utf-8", "replace")
            elif exc_name == "MemoryError":
                status = "memory_error"
            elif code == -signal.SIGXCPU:
                status = "timeout"
            elif code == -signal.SIGXFSZ:
                status = "output_limit"
                result["detail"] = "file size limit exceeded"
            else:
                status = "exec_error"
        result.update(status=status, exit_code=code, stdout=bytes(bufs[out_r][:cap]), stderr=bytes(bufs[err_r][:cap]))
    except BaseException as e:  # noqa: BLE001 - any failure here is the sandbox's, reported as sandbox_error
        result["detail"] = f"run-init failed: {e!r}"
        _remove_workdir(workdir, private_tmp)
    result["duration_s"] = time.monotonic() - t0
    try:
        payload = pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
        os.set_blocking(result_w, True)
        os.write(result_w, HEADER.pack(len(payload)))
        view = memoryview(payload)
        while view:
            view = view[os.write(result_w, view) :]
    finally:
        os._exit(0)  # PID 1 exiting: the kernel kills everything left in this namespace


# ----------------------------------------------------------------------------------------------------------------------
# Server loop
# ----------------------------------------------------------------------------------------------------------------------


class Server:
    def __init__(self, sock: socket.socket, cfg: dict, features: set[str], base: str):
        self.sock, self.cfg, self.features, self.base = sock, cfg, features, base
        self.sel = selectors.DefaultSelector()
        self.sel.register(sock, selectors.EVENT_READ)
        self.pending: list[dict] = []
        self.runs: dict[int, dict] = {}  # result pipe fd -> run state
        self.own_pidns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC) if "pid" in features else -1

    def start(self, req: dict) -> None:
        req["run_uid"] = self.cfg["run_uid"]
        workdir = os.path.join(self.base, f"run-{req['id']}")
        pid = -1
        try:
            os.mkdir(workdir, 0o700)
            if "uid" in self.features:
                os.chown(workdir, self.cfg["run_uid"], self.cfg["run_uid"])
            r, w = os.pipe()
            if self.own_pidns >= 0:
                unshare(CLONE_NEWPID)  # the next child is PID 1 of a fresh namespace
            try:
                pid = os.fork()
            finally:
                if self.own_pidns >= 0 and pid != 0:
                    setns(self.own_pidns, CLONE_NEWPID)  # later forks of the server itself stay where they were
        except OSError as e:
            shutil.rmtree(workdir, ignore_errors=True)
            self.reply(
                {
                    "id": req["id"],
                    "status": "sandbox_error",
                    "exit_code": None,
                    "stdout": b"",
                    "stderr": b"",
                    "detail": f"fork server could not start the run: {e!r}",
                    "duration_s": 0.0,
                }
            )
            return
        if pid == 0:
            os.close(r)
            self.sock.close()
            _run_init(req, workdir, w, self.features)
        os.close(w)
        os.set_blocking(r, False)
        self.sel.register(r, selectors.EVENT_READ)
        backstop = time.monotonic() + req["timeout_s"] + SERVER_GRACE_S
        self.runs[r] = {
            "id": req["id"],
            "pid": pid,
            "buf": bytearray(),
            "workdir": workdir,
            "backstop": backstop,
            "replied": False,
        }

    def finish(self, fd: int) -> None:
        run = self.runs.pop(fd)
        self.sel.unregister(fd)
        os.close(fd)
        try:
            os.kill(run["pid"], signal.SIGKILL)  # normally already exited; a no-op then
        except OSError:
            pass
        os.waitpid(run["pid"], 0)
        if run["replied"]:
            return
        if "pid" not in self.features:
            _kill_descendants(run["pid"])  # the run-init died early: its snippet's processes are ours to kill
        shutil.rmtree(run["workdir"], ignore_errors=True)
        result = {
            "id": run["id"],
            "status": "sandbox_error",
            "exit_code": None,
            "stdout": b"",
            "stderr": b"",
            "detail": run.get("detail", "run supervisor died without a result"),
            "duration_s": 0.0,
        }
        self.reply(result)

    def reply(self, obj: dict) -> None:
        send_frame(self.sock, obj)

    def serve(self) -> None:
        max_runs = self.cfg["max_concurrency"]
        while True:
            while self.pending and len(self.runs) < max_runs:
                self.start(self.pending.pop(0))
            timeout = None
            if self.runs:
                timeout = max(0.0, min(r["backstop"] for r in self.runs.values()) - time.monotonic())
            for key, _ in self.sel.select(timeout):
                if key.fileobj is self.sock:
                    msg = recv_frame(self.sock)
                    if msg is None or msg.get("op") == "shutdown":
                        return
                    if msg["op"] == "run":
                        self.pending.append(msg)
                    elif msg["op"] == "stats":
                        self.reply(
                            {
                                "id": msg["id"],
                                "stats": {
                                    "active": sum(not r["replied"] for r in self.runs.values()),
                                    "queued": len(self.pending),
                                    "workdirs": len(os.listdir(self.base)),
                                },
                            }
                        )
                    continue
                fd = key.fd
                run = self.runs[fd]
                try:
                    chunk = os.read(fd, 1 << 20)
                except BlockingIOError:
                    continue
                if chunk:
                    run["buf"] += chunk
                    buf = run["buf"]
                    if not run["replied"] and len(buf) >= HEADER.size:
                        if len(buf) == HEADER.size + HEADER.unpack_from(buf)[0]:
                            # The run-init has killed, reaped and cleaned up before writing its result; reply now
                            # and reap it when its pipe closes (PID-namespace teardown takes a few ms of kernel time).
                            run["replied"] = True
                            self.reply(pickle.loads(bytes(buf[HEADER.size :])))
                else:
                    self.finish(fd)
            now = time.monotonic()
            for fd, run in list(self.runs.items()):
                if now > run["backstop"] and not run["replied"]:
                    run["detail"] = "run supervisor missed its deadline; killed by the fork server"
                    self.finish(fd)

    def shutdown(self) -> None:
        for fd in list(self.runs):
            self.finish(fd)


def main() -> None:
    sock = socket.socket(fileno=int(sys.argv[1]))
    os.set_inheritable(sock.fileno(), False)
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # the server never outlives the host process
    cfg = recv_frame(sock)
    assert isinstance(cfg, dict)
    for name in cfg.get("preload", ()):
        __import__(name)  # shared copy-on-write by every run; a failing preload is a start-up error
    try:
        features, base, notes = setup_isolation(cfg)
    except OSError as e:
        send_frame(sock, {"ready": False, "error": f"isolation set-up failed: {e!r}"})
        return
    send_frame(sock, {"ready": True, "pid": os.getpid(), "features": sorted(features), "notes": notes})
    server = Server(sock, cfg, features, base)
    gc.collect()
    gc.freeze()  # forked runs never traverse (and so never copy-on-write) the server's objects during GC
    try:
        server.serve()
    finally:
        server.shutdown()


if __name__ == "__main__":
    try:
        main()
    except (BrokenPipeError, ConnectionResetError):
        pass
    except OSError as e:
        if e.errno != errno.EPIPE:
            raise
