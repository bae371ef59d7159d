"""Cgroups of a sandbox pool: one cgroup per slot (concurrent run) with a memory limit set for each run and a process
cap, and the pool's cgroup that holds them (and the fork server) so that closing the pool can kill every process that
was ever part of it.

cgroup v2 (one hierarchy with the memory and pids controllers) is used where available, else the v1 memory and pids
hierarchies. Pools nest under the host process's own cgroup (v1; v2 where controllers can be enabled there, else under
the root), so what the sandbox uses counts towards whatever contains the host. Creating cgroups needs root (or a
delegated subtree): elsewhere there are no cgroups and the pool says so (``SandboxPool.features`` lacks memcg/pidcg).

Names carry the owner's PID (``grporoc-sandbox-pool-<pid>-<random>``): ``sweep_stale`` removes the cgroups and temp
dirs of pools whose host process is gone (killed hosts cannot clean up after themselves).
"""

from __future__ import annotations

import logging
import os
import signal
import tempfile
import time
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

CGROUP_ROOT = "/sys/fs/cgroup"
#: Prefix of every pool's cgroup and host temp directory: ``grporoc-sandbox-pool-<host pid>-<random>``.
RESOURCE_PREFIX = "grporoc-sandbox-"


def _own_cgroup(controller: str | None) -> str:
    """This process's cgroup path in the v1 hierarchy of ``controller`` (None: the v2 hierarchy)."""
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                _, ctrls, path = line.rstrip("\n").split(":", 2)
                if (controller is None and ctrls == "") or (controller is not None and controller in ctrls.split(",")):
                    return path
    except OSError:
        pass
    return "/"


def _v2_root() -> str | None:
    """Mount point of the cgroup v2 hierarchy if it has the memory and pids controllers."""
    for path in (CGROUP_ROOT, os.path.join(CGROUP_ROOT, "unified")):
        try:
            with open(os.path.join(path, "cgroup.controllers")) as f:
                if {"memory", "pids"} <= set(f.read().split()):
                    return path
        except OSError:
            continue
    return None


def hierarchy_dirs() -> list[str]:
    """Directories pools may be created in (for ``sweep_stale`` and the tests' leftover checks)."""
    out = []
    v2 = _v2_root()
    if v2 is not None:
        out += [v2, os.path.normpath(v2 + _own_cgroup(None))]
    for ctrl in ("memory", "pids"):
        root = os.path.join(CGROUP_ROOT, ctrl)
        if os.path.isdir(root) and os.path.exists(os.path.join(root, "cgroup.procs")):
            out += [root, os.path.normpath(root + _own_cgroup(ctrl))]
    return sorted(set(out))


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _procs(path: str) -> list[int]:
    try:
        with open(os.path.join(path, "cgroup.procs")) as f:
            return [int(x) for x in f.read().split()]
    except (OSError, ValueError):
        return []


def kill_all(path: str) -> None:
    """SIGKILLs every process in a pool cgroup and its children (the cgroups stay)."""
    try:
        children = [os.path.join(path, n) for n in os.listdir(path) if os.path.isdir(os.path.join(path, n))]
    except OSError:
        children = []
    for d in [path, *children]:
        for pid in _procs(d):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def remove_tree(path: str, kill: bool, timeout_s: float = 10.0) -> bool:
    """Removes a pool cgroup and its children. With ``kill``, SIGKILLs whatever is still in them first (every process
    there is the pool's: the server, its template, zygotes and runs, which cannot leave). False if it could not."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            children = [os.path.join(path, n) for n in os.listdir(path) if os.path.isdir(os.path.join(path, n))]
        except FileNotFoundError:
            return True
        except OSError:
            children = []
        busy = False
        for d in [*children, path]:
            if kill:
                for pid in _procs(d):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
            try:
                os.rmdir(d)
            except FileNotFoundError:
                pass
            except OSError:
                busy = True
        if not busy:
            return True
        if not kill or time.monotonic() > deadline:
            if kill:
                logger.error("sandbox cgroup %s could not be removed (tasks %s)", path, _procs(path))
            return False
        time.sleep(0.005)


@dataclass
class PoolCgroups:
    """The cgroups of one pool; ``None`` from ``create`` where cgroups are not writable."""

    version: int
    memory: str | None  # pool directory holding the memory controller (v2: the pool directory)
    pids: str | None  # pool directory holding the pids controller (v2: the same)
    swap: bool = False  # v1 with swap on: the slots' memory+swap limit is set too
    fds: dict[str, int] = field(default_factory=dict)

    @classmethod
    def create(cls, name: str, slots: int, max_processes: int, notes: list[str]) -> PoolCgroups | None:
        v2 = _v2_root()
        try:
            if v2 is not None:
                return cls._create_v2(v2, name, slots, max_processes)
            return cls._create_v1(name, slots, max_processes)
        except OSError as e:
            notes.append(f"no per-run cgroups (memory limit per process only, process cap per uid): {e}")
            return None

    @classmethod
    def _create_v2(cls, root: str, name: str, slots: int, max_processes: int) -> PoolCgroups:
        parent = os.path.normpath(root + _own_cgroup(None))
        pool = None
        for base in dict.fromkeys((parent, root)):
            try:
                _write(os.path.join(base, "cgroup.subtree_control"), "+memory +pids")
            except OSError:
                continue  # a cgroup holding processes cannot delegate controllers: try the root
            pool = os.path.join(base, name)
            break
        if pool is None:
            raise OSError("cannot enable the memory and pids controllers in any cgroup v2 parent")
        os.mkdir(pool)
        self = cls(2, pool, pool)
        try:
            _write(os.path.join(pool, "cgroup.subtree_control"), "+memory +pids")
            os.mkdir(os.path.join(pool, "ctl"))  # the server and template (v2: no processes in inner cgroups)
            for k in range(slots):
                slot = os.path.join(pool, f"slot-{k}")
                os.mkdir(slot)
                _write(os.path.join(slot, "pids.max"), str(max_processes + 1))  # + the slot's zygote
                for key, value in (("memory.swap.max", "0"), ("memory.oom.group", "0")):
                    if os.path.exists(os.path.join(slot, key)):
                        _write(os.path.join(slot, key), value)
        except OSError:
            self.remove()
            raise
        return self

    @classmethod
    def _create_v1(cls, name: str, slots: int, max_processes: int) -> PoolCgroups:
        dirs = {}
        for ctrl in ("memory", "pids"):
            root = os.path.join(CGROUP_ROOT, ctrl)
            if os.path.exists(os.path.join(root, "cgroup.procs")):
                dirs[ctrl] = os.path.join(os.path.normpath(root + _own_cgroup(ctrl)), name)
        if not dirs:
            raise OSError("no cgroup v1 memory or pids hierarchy mounted")
        swap = _swap_on()
        self = cls(1, None, None, swap=swap)
        try:
            for ctrl, pool in dirs.items():
                os.mkdir(pool)
                setattr(self, ctrl, pool)
                if ctrl == "pids":
                    _write(os.path.join(pool, "pids.max"), str(slots * (max_processes + 1) + 16))
                for k in range(slots):
                    slot = os.path.join(pool, f"slot-{k}")
                    os.mkdir(slot)
                    if ctrl == "pids":
                        _write(os.path.join(slot, "pids.max"), str(max_processes + 1))  # + the slot's zygote
                    elif swap and not os.path.exists(os.path.join(slot, "memory.memsw.limit_in_bytes")):
                        self.swap = False
        except OSError:
            self.remove()
            raise
        return self

    def adopt(self, pid: int) -> None:
        """Puts the fork server (and so its template) in the pool's cgroups."""
        if self.version == 2:
            _write(os.path.join(self.memory, "ctl", "cgroup.procs"), str(pid))
            return
        for pool in (self.memory, self.pids):
            if pool is not None:
                _write(os.path.join(pool, "cgroup.procs"), str(pid))

    def open_fds(self) -> dict:
        """Directory fds (passed to the fork server, which cannot see /sys) and what the broker needs to know."""
        for key in ("memory", "pids"):
            path = getattr(self, key)
            if path is not None and key not in self.fds:
                if self.version == 2 and key == "pids":
                    self.fds["pids"] = self.fds["memory"]
                else:
                    self.fds[key] = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        return {
            "version": self.version,
            "memory_fd": self.fds.get("memory"),
            "pids_fd": self.fds.get("pids"),
            "swap": self.swap,
        }

    def close_fds(self) -> None:
        for fd in set(self.fds.values()):
            os.close(fd)
        self.fds.clear()

    @property
    def paths(self) -> list[str]:
        return sorted({p for p in (self.memory, self.pids) if p is not None})

    def remove(self) -> bool:
        """Kills every process left in the pool's cgroups and removes them."""
        self.close_fds()
        ok = True
        for path in self.paths:
            ok &= remove_tree(path, kill=True)
        return ok


def _swap_on() -> bool:
    try:
        with open("/proc/swaps") as f:
            return len(f.read().splitlines()) > 1
    except OSError:
        return False


def owner_pid(name: str) -> int | None:
    """Host PID that created the pool behind a cgroup / temp dir name, None for names not of that form."""
    parts = name[len(RESOURCE_PREFIX) :].split("-")
    if not name.startswith(RESOURCE_PREFIX + "pool-") or len(parts) < 3 or not parts[1].isdigit():
        return None
    return int(parts[1])


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def pool_resources(temp_dir: str | None = None) -> set[str]:
    """Every pool cgroup and host temp dir on this machine (any owner)."""
    found = set()
    for root in [*hierarchy_dirs(), temp_dir or tempfile.gettempdir()]:
        try:
            found |= {os.path.join(root, n) for n in os.listdir(root) if n.startswith(RESOURCE_PREFIX + "pool-")}
        except OSError:
            pass
    return found


def sweep_stale(temp_dir: str | None = None) -> list[str]:
    """Removes cgroups and temp dirs of pools whose host process is gone (killed hosts, e.g. ``ray.kill``ed actors,
    cannot clean up after themselves). Returns what was removed; a cgroup with processes left is never touched."""
    from grporoc_plugin.sandbox.server._linux import remove_tree as remove_dir

    removed = []
    for path in sorted(pool_resources(temp_dir)):
        owner = owner_pid(os.path.basename(path))
        if owner is None or owner == os.getpid() or pid_alive(owner):
            continue
        try:
            if path.startswith(CGROUP_ROOT + "/"):
                if not remove_tree(path, kill=False):
                    continue
            else:
                remove_dir(path)
            removed.append(path)
        except OSError:
            pass
    return removed
