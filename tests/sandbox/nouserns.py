"""Runs a command as on a host that forbids user namespaces (root only): ``nouserns.py [--user NAME] -- CMD...``.

The command runs in a user namespace mapping every host uid and gid to itself, whose own ``max_user_namespaces`` is 0,
without any capability: as the given user, or as uid 0 without capabilities. Nothing of the host's configuration
changes (the limit is the namespace's own), and what the command sees is what an unprivileged user sees on a host
with ``user.max_user_namespaces=0``: no user namespace (ENOSPC), no namespace at all, no bubblewrap.
"""

from __future__ import annotations

import ctypes
import os
import pwd
import sys

CLONE_NEWUSER = 0x10000000
PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 24, 38
libc = ctypes.CDLL(None, use_errno=True)


def main(argv: list[str]) -> int:
    user = None
    if argv[:1] == ["--user"]:
        user, argv = argv[1], argv[2:]
    if argv[:1] != ["--"] or len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cmd = argv[1:]
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(ready_r)
        os.close(go_w)
        if libc.unshare(CLONE_NEWUSER) != 0:
            os._exit(90)
        os.write(ready_w, b"u")
        if os.read(go_r, 1) != b"g":
            os._exit(91)
        with open("/proc/sys/user/max_user_namespaces", "w") as f:
            f.write("0")
        if user is not None:
            pw = pwd.getpwnam(user)
            os.setgroups([])
            os.setresgid(pw.pw_gid, pw.pw_gid, pw.pw_gid)
            os.setresuid(pw.pw_uid, pw.pw_uid, pw.pw_uid)  # leaves no capability
            os.environ.update(HOME=pw.pw_dir, USER=user, LOGNAME=user)
        else:
            for cap in range(64):
                if libc.prctl(PR_CAPBSET_DROP, ctypes.c_ulong(cap), 0, 0, 0) != 0:
                    break
            header = (ctypes.c_uint32 * 2)(0x20080522, 0)
            if libc.capset(header, (ctypes.c_uint32 * 6)()) != 0:
                os._exit(92)
        libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        os.execvp(cmd[0], cmd)
    os.close(ready_w)
    os.close(go_r)
    if os.read(ready_r, 1) != b"u":
        return 90
    for name in ("uid_map", "gid_map"):
        with open(f"/proc/{pid}/{name}", "w") as f:
            f.write("0 0 4294967295")
    os.write(go_w, b"g")
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
