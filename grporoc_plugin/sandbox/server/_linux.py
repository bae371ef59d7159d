"""Thin ctypes wrappers for the Linux calls the sandbox needs (stdlib only)."""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import stat
import time

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWTIME = 0x00000080
#: Every namespace flag of clone/unshare (the seccomp filter denies them all to snippets).
CLONE_NEW_ANY = (
    CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET
    | CLONE_NEWTIME
)  # fmt: skip
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_BIND, MS_REC, MS_PRIVATE = 0x1000, 0x4000, 1 << 18
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_SECCOMP, PR_CAPBSET_DROP = 1, 4, 22, 24
PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 36, 38
SECCOMP_MODE_FILTER = 2
SYS_MOUNT_SETATTR, AT_RECURSIVE, MOUNT_ATTR_RDONLY = 442, 0x8000, 0x1
SYS_CAPSET = {"x86_64": 126, "aarch64": 91}.get(os.uname().machine, 126)
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}.get(os.uname().machine, 155)
AT_FDCWD = -100

libc = ctypes.CDLL(None, use_errno=True)


def check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unshare(flags: int) -> None:
    check(libc.unshare(ctypes.c_int(flags)), "unshare")


def setns(fd: int, nstype: int) -> None:
    check(libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), "setns")


def mount(src: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = [None if s is None else s.encode() for s in (src, target, fstype, data)]
    check(libc.mount(enc[0], enc[1], enc[2], ctypes.c_ulong(flags), enc[3]), f"mount {target}")


def umount_detach(target: str) -> None:
    check(libc.umount2(target.encode(), ctypes.c_int(MNT_DETACH)), f"umount {target}")


def pivot_root(new_root: str, put_old: str) -> None:
    check(libc.syscall(ctypes.c_long(SYS_PIVOT_ROOT), new_root.encode(), put_old.encode()), "pivot_root")


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
    check(ret, "mount_setattr")


def prctl(option: int, arg: int) -> None:
    check(libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg), 0, 0, 0), "prctl")


def write_file(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def enter_user_namespace() -> None:
    """unshare(CLONE_NEWUSER) mapping 0 to the caller's own uid/gid: full capabilities inside, none outside (the one
    mapping a process may write for itself; setgroups is denied first, as the kernel then requires)."""
    uid, gid = os.geteuid(), os.getegid()
    unshare(CLONE_NEWUSER)
    write_file("/proc/self/setgroups", "deny")
    write_file("/proc/self/uid_map", f"0 {uid} 1")
    write_file("/proc/self/gid_map", f"0 {gid} 1")


def drop_capabilities(uid: int | None = None, setgroups: bool = True) -> None:
    """Empties the bounding set, becomes ``uid`` (when given), empties the permitted, effective and inheritable sets
    and sets no_new_privs: root without powers, or an unprivileged user that cannot regain any."""
    for cap in range(64):
        if libc.prctl(PR_CAPBSET_DROP, ctypes.c_ulong(cap), 0, 0, 0) != 0:
            break  # EINVAL past the last capability the kernel knows
    if uid is not None:
        if setgroups:
            os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this thread
    data = (ctypes.c_uint32 * 6)()
    check(libc.syscall(ctypes.c_long(SYS_CAPSET), header, data), "capset")
    prctl(PR_SET_NO_NEW_PRIVS, 1)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def load_seccomp(bpf: bytes) -> None:
    """Installs a classic-BPF seccomp program (exported by libseccomp on the host side; 8 bytes per instruction).
    Needs no_new_privs (or CAP_SYS_ADMIN); inherited by every child, irrevocable."""
    buf = ctypes.create_string_buffer(bpf, len(bpf))
    prog = _SockFprog(len(bpf) // 8, ctypes.addressof(buf))
    check(libc.prctl(PR_SET_SECCOMP, ctypes.c_ulong(SECCOMP_MODE_FILTER), ctypes.byref(prog), 0, 0), "seccomp")


def remove_tree(path: str) -> None:
    """Deletes a directory tree of any depth without recursion (``shutil.rmtree`` recurses, so a deep tree raises
    RecursionError) and without long paths (it descends by directory fd, so depth beyond PATH_MAX is fine).

    Symlinks are removed, never followed. A directory the snippet made unreadable is made readable again first (we own
    everything in a run directory, or are root). Missing ``path`` is not an error.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    except NotADirectoryError:
        os.unlink(path)
        return
    names: list[str] = []  # path from ``path`` down to the directory ``fd`` is open on
    try:
        while True:
            child = _clear_files(fd)
            if child is not None:
                try:
                    sub = os.open(child, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                except PermissionError:
                    os.chmod(child, 0o700, dir_fd=fd)
                    sub = os.open(child, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                os.close(fd)
                fd = sub
                names.append(child)
                continue
            if not names:
                break
            parent = os.open("..", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = parent
            os.rmdir(names.pop(), dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(path)


def _clear_files(fd: int) -> str | None:
    """Unlinks every non-directory entry of the directory ``fd``; returns one subdirectory's name, or None."""
    try:
        entries = list(os.scandir(fd))
    except PermissionError:
        os.fchmod(fd, 0o700)
        entries = list(os.scandir(fd))
    subdir = None
    for entry in entries:
        try:
            st = os.stat(entry.name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(st.st_mode):
            subdir = entry.name
            continue
        try:
            os.unlink(entry.name, dir_fd=fd)
        except PermissionError:
            os.fchmod(fd, 0o700)
            os.unlink(entry.name, dir_fd=fd)
        except FileNotFoundError:
            pass
    return subdir


def errno_name(err: int) -> str:
    return errno.errorcode.get(err, str(err))


def kill_descendants(root_pid: int, keep: frozenset[int] | set[int] = frozenset(), reap: bool = True) -> None:
    """SIGKILLs every live process whose parent chain reaches ``root_pid`` (except ``keep`` and their descendants)
    and, with ``reap``, reaps what became ours. Repeats until two passes in a row find none, so a fork bomb racing
    the scan is caught on a later pass (its size is bounded by RLIMIT_NPROC or the pids cgroup), and so is a process
    whose parent died while a pass read /proc (it named that parent, which a later read shows reparented: dead parents
    are kept as links in the tree, but one already reaped is gone)."""
    if reap and root_pid == os.getpid() and not keep:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                pass  # a child is alive: scan
        except ChildProcessError:
            return  # the common case: nothing escaped (orphans would be our children), no /proc scan needed
    empty_passes = 0
    for _ in range(500):
        children: dict[int, list[int]] = {}
        dead: set[int] = set()
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    stat = f.read()
                fields = stat[stat.rfind(b")") + 2 :].split()
                ppid = int(fields[1])
            except (OSError, ValueError, IndexError):
                continue
            if fields[0] in (b"Z", b"X"):
                dead.add(int(name))  # nothing to kill; reaping it is its parent's business
            children.setdefault(ppid, []).append(int(name))
        found, stack = [], [p for p in children.get(root_pid, []) if p not in keep]
        while stack:
            p = stack.pop()
            if p not in dead:
                found.append(p)
            stack.extend(children.get(p, []))
        if not found:
            empty_passes += 1
            if empty_passes == 2:
                return
            time.sleep(0.001)
            continue
        empty_passes = 0
        for p in found:
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
        if reap:
            while True:  # reap what we (the subreaper) inherited, without blocking on what is still dying
                try:
                    if os.waitpid(-1, os.WNOHANG)[0] == 0:
                        break
                except ChildProcessError:
                    break
        time.sleep(0.001)
