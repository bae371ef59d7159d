"""The snippets' seccomp filter, built with libseccomp (``pyseccomp``: ctypes bindings, API-compatible with
libseccomp's own Python module) and exported as classic BPF for the fork server to install.

Default allow, with a deny list of kernel surface no snippet needs and that has a history of privilege escalations:
io_uring, the kernel keyring (also the one thing uid-keyed that would otherwise cross from run to run), eBPF,
perf_event_open, userfaultfd, ptrace, every mount/namespace call (in particular a nested user namespace, which would
hand the snippet a full set of capabilities inside it), module/kexec/reboot/swap/accounting calls, ``modify_ldt``,
``uselib`` and TIOCSTI/TIOCLINUX. ``clone3`` answers ENOSYS (its flags sit in memory a filter cannot read; libc then
falls back to ``clone``, whose namespace flags are filtered). System calls of any other architecture (x32, i386 through
``int 0x80``) kill the process.

The filter is built on the host, where the package's dependencies are installed, so the fork server's interpreter
(any Python, e.g. a bare venv) needs nothing but ``prctl``.
"""

from __future__ import annotations

import errno
import functools
import logging
import os

logger = logging.getLogger(__name__)

#: Denied with EPERM.
DENIED: tuple[str, ...] = (
    "keyctl", "add_key", "request_key",
    "bpf", "perf_event_open", "userfaultfd",
    "ptrace", "process_vm_readv", "process_vm_writev",
    "mount", "umount2", "pivot_root", "chroot", "setns",
    "open_tree", "move_mount", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
    "reboot", "swapon", "swapoff", "acct", "quotactl", "quotactl_fd", "syslog",
    "modify_ldt", "uselib", "lookup_dcookie", "vhangup", "name_to_handle_at", "open_by_handle_at",
    "fanotify_init", "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
    "iopl", "ioperm",
)  # fmt: skip
#: Denied with ENOSYS, so that callers fall back to something else.
UNAVAILABLE: tuple[str, ...] = ("io_uring_setup", "io_uring_enter", "io_uring_register", "clone3")
#: CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET, NEWTIME.
NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000, 0x00000080)
TIOCSTI, TIOCLINUX = 0x5412, 0x541C


def _bindings():
    try:
        import seccomp as sc  # libseccomp's own bindings (Debian's python3-seccomp), where this interpreter has them
    except ImportError:
        import pyseccomp as sc
    return sc


@functools.lru_cache(maxsize=1)
def filter_bpf() -> bytes | None:
    """The filter as classic BPF (8 bytes per instruction), or None when libseccomp is not available here."""
    try:
        sc = _bindings()
        flt = sc.SyscallFilter(sc.ALLOW)
        flt.set_attr(sc.Attr.ACT_BADARCH, sc.KILL_PROCESS)
        for name in DENIED:
            _rule(sc, flt, sc.ERRNO(errno.EPERM), name)
        for name in UNAVAILABLE:
            _rule(sc, flt, sc.ERRNO(errno.ENOSYS), name)
        # Any namespace flag of unshare/clone (their first argument on x86_64 and aarch64): one rule per flag, since
        # libseccomp ORs the rules of a call while a masked comparison tests one value.
        for flag in NAMESPACE_FLAGS:
            for name in ("unshare", "clone"):
                flt.add_rule(sc.ERRNO(errno.EPERM), name, sc.Arg(0, sc.MASKED_EQ, flag, flag))
        for request in (TIOCSTI, TIOCLINUX):  # pushing input into a terminal, the classic sandbox escape
            flt.add_rule(sc.ERRNO(errno.EPERM), "ioctl", sc.Arg(1, sc.MASKED_EQ, 0xFFFFFFFF, request))
        r, w = os.pipe()
        try:
            with os.fdopen(w, "wb", closefd=False) as f:
                flt.export_bpf(f)
        finally:
            os.close(w)
        data = b""
        while chunk := os.read(r, 1 << 16):
            data += chunk
        os.close(r)
        return data
    except Exception as e:  # noqa: BLE001 - missing library or symbol: the pool reports the layer as absent
        logger.info("seccomp filter unavailable: %r", e)
        return None


def _rule(sc, flt, action: int, name: str) -> None:
    try:
        flt.add_rule(action, name)
    except (RuntimeError, OSError, ValueError):
        pass  # a call this kernel / libseccomp version does not know (e.g. a newer one): nothing to deny
