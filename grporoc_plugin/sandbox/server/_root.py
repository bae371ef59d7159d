"""The fork server's own isolation, set up once per server (stdlib only): user, network, mount, IPC and UTS
namespaces and the sandbox root filesystem (namespaces mode; under bubblewrap, bubblewrap builds the same root)."""

from __future__ import annotations

import errno
import os
import sys

try:  # package mode (host-side imports and tests) or script mode (the fork server's interpreter)
    from . import _linux
except ImportError:
    import _linux

MS_BIND, MS_REC, MS_PRIVATE = _linux.MS_BIND, _linux.MS_REC, _linux.MS_PRIVATE
MS_NOSUID, MS_NODEV = _linux.MS_NOSUID, _linux.MS_NODEV


def in_user_namespace() -> bool:
    """Whether this process is in a user namespace other than the host's (its uid 0 is then nobody outside)."""
    try:
        with open("/proc/self/uid_map") as f:
            return f.read().split() != ["0", "0", "4294967295"]
    except OSError:
        return False


def userns_hint(err: int) -> str:
    """How a failed unshare(CLONE_NEWUSER) is usually explained, and how to get user namespaces."""
    why = {
        errno.ENOSPC: "user.max_user_namespaces is 0 (or exhausted) on this host",
        errno.EPERM: "user namespaces are forbidden for this user (kernel.unprivileged_userns_clone=0, an AppArmor "
        "policy such as kernel.apparmor_restrict_unprivileged_userns=1, or a container's seccomp profile)",
        errno.EINVAL: "the kernel has no user-namespace support (CONFIG_USER_NS)",
        errno.EUSERS: "the user-namespace nesting limit is reached",
    }.get(err, f"unshare(CLONE_NEWUSER) failed with {_linux.errno_name(err)}")
    return (
        f"user namespaces unavailable: {why}; to get them: run as root, or enable unprivileged user namespaces "
        "(sysctl -w user.max_user_namespaces=15000 kernel.unprivileged_userns_clone=1), or install a setuid "
        "bubblewrap"
    )


def enter_namespaces(notes: list[str]) -> set[str]:
    """Network, mount, IPC and UTS namespaces for the server (through a user namespace when not privileged).
    Returns the features obtained: "userns" (it took a user namespace), "net" (no network), "mntns" (a mount
    namespace in which ``build_root`` may run)."""
    features: set[str] = set()
    try:
        _linux.unshare(_linux.CLONE_NEWNET)
    except OSError as e:
        if e.errno != errno.EPERM:
            notes.append(f"network namespace unavailable: {e}")
        else:
            try:
                _linux.enter_user_namespace()
                features.add("userns")
            except OSError as ue:
                notes.append(userns_hint(ue.errno or 0))
                return features
            try:
                _linux.unshare(_linux.CLONE_NEWNET)
            except OSError as e2:
                notes.append(f"network namespace unavailable: {e2}")
                return features
    features.add("net")
    try:
        _linux.unshare(_linux.CLONE_NEWNS | _linux.CLONE_NEWIPC | _linux.CLONE_NEWUTS)
        _linux.mount(None, "/", None, MS_REC | MS_PRIVATE)
        features.add("mntns")
    except OSError as e:
        notes.append(f"mount namespace unavailable: {e}")
    return features


def build_root(layout: dict, tmpfs_mb: int) -> None:
    """Makes this mount namespace's root an empty read-only tmpfs holding only ``layout`` (see layout.py).

    Staging as bubblewrap does: a tmpfs on /tmp becomes the root with the host's root under /oldroot, the new root is
    assembled in /newroot from /oldroot/<path>, then swapped in and the host's root detached.
    """
    _linux.mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
    os.chdir("/tmp")
    os.mkdir("newroot", 0o755)
    os.mkdir("oldroot", 0o755)
    _linux.pivot_root(".", "oldroot")
    os.chdir("/")
    new, old = "/newroot", "/oldroot"
    _linux.mount("tmpfs", new, "tmpfs", MS_NOSUID, "size=1m,mode=0755")
    for src, path in layout["binds"]:
        dst = new + path
        if os.path.isdir(old + src):
            os.makedirs(dst, 0o755, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(dst), 0o755, exist_ok=True)
            os.close(os.open(dst, os.O_CREAT | os.O_WRONLY, 0o644))
        _linux.mount(old + src, dst, None, MS_BIND | MS_REC)
    for path, target in layout["symlinks"]:
        os.makedirs(os.path.dirname(new + path), 0o755, exist_ok=True)
        os.symlink(target, new + path)
    os.makedirs(new + "/dev/shm", 0o755)
    for dev in ("null", "zero", "full", "random", "urandom"):
        os.close(os.open(f"{new}/dev/{dev}", os.O_CREAT | os.O_WRONLY, 0o666))
        _linux.mount(f"{old}/dev/{dev}", f"{new}/dev/{dev}", None, MS_BIND)
    for i, name in enumerate(("stdin", "stdout", "stderr")):
        os.symlink(f"/proc/self/fd/{i}", f"{new}/dev/{name}")
    os.symlink("/proc/self/fd", f"{new}/dev/fd")
    os.makedirs(new + "/proc", 0o555)
    for path in ("/tmp", "/var/tmp"):
        os.makedirs(new + path, 0o755, exist_ok=True)
    _linux.make_tree_readonly(new)
    # The server's own view of processes, writable (zygotes write their uid maps and OOM scores there); every run
    # mounts a read-only procfs of its own PID namespace over it.
    _linux.mount(old + "/proc", new + "/proc", None, MS_BIND | MS_REC)
    # Writable, size-bounded scratch for runs that cannot have their own (each run normally mounts its own tmpfs).
    for path in ("/tmp", "/var/tmp", "/dev/shm"):
        _linux.mount("tmpfs", new + path, "tmpfs", MS_NOSUID | MS_NODEV, f"size={tmpfs_mb}m,mode=1777")
    os.chdir(new)
    _linux.pivot_root(".", ".")  # the staging root (with the host's under it) now sits on top of the new root...
    _linux.umount_detach(".")  # ...and goes
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
