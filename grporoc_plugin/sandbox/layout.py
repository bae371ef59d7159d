"""What a snippet's filesystem contains (namespaces and bwrap isolation): an allow-list, not a block-list.

The sandbox root is an empty read-only tmpfs into which only these are bind-mounted read-only, at their host paths:
the system directories (/usr, /bin, /lib*, /sbin), a handful of non-secret /etc files, the snippet interpreter's
prefix (its stdlib), its site-packages (``SandboxConfig.expose_site_packages``) and ``SandboxConfig.extra_ro_paths``.
Symlinks on the way to them (a venv's ``bin/python`` -> the base interpreter, ``/lib`` -> ``usr/lib``) are recreated.
Everything else of the host (/root, /home, /work, the repo, /var, /run, /opt, /mnt, /sys, the host's /tmp...) does not
exist in the sandbox; the only directories leading to an exposed path are empty skeleton directories (e.g. ``/root``
holds nothing but ``.pyenv``). /tmp, /var/tmp and /dev/shm are fresh tmpfs; /dev holds null, zero, full, random,
urandom; /proc is the run's own PID namespace.

Exposed paths that lie in a scratch directory (a venv or checkout under /tmp) would be hidden by those fresh tmpfs, so
they appear at ``HOST_DIR`` + their host path instead (read-only like every bind); ``sandbox_path`` maps a host path
to where the sandbox sees it, and the fork server rewrites its own ``sys.path`` / ``sys.prefix``... the same way.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess

from grporoc_plugin.sandbox.config import SCRATCH_DIRS

SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
#: /etc entries a program may reasonably read (no shadow, gshadow, ssl/private, ssh, sudoers, machine-id...).
ETC_ENTRIES = (
    "passwd",
    "group",
    "hosts",
    "host.conf",
    "nsswitch.conf",
    "localtime",
    "timezone",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "alternatives",
    "os-release",
    "debian_version",
    "mime.types",
    "protocols",
    "services",
    "locale.alias",
    "fonts",
)
DEVICES = ("null", "zero", "full", "random", "urandom")
#: Where exposed host paths from scratch directories (SCRATCH_DIRS) appear inside the sandbox.
HOST_DIR = "/.grporoc-host"
#: Python probe run once per interpreter: prefixes, site-packages, sys.path (isolated mode, like the fork server).
_PROBE = "import json, site, sys; print(json.dumps([sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, site.getsitepackages()]))"  # noqa: E501


@functools.lru_cache(maxsize=8)
def interpreter_paths(python: str) -> tuple[str, str, str, str, tuple[str, ...]]:
    """(prefix, base_prefix, exec_prefix, base_exec_prefix, site-packages dirs) of ``python -I``."""
    out = subprocess.run([python, "-I", "-c", _PROBE], capture_output=True, text=True, timeout=60, check=True)
    prefix, base, exec_prefix, base_exec, site_dirs = json.loads(out.stdout)
    return prefix, base, exec_prefix, base_exec, tuple(site_dirs)


def _resolve(path: str, binds: set[str], links: dict[str, str], depth: int = 0) -> None:
    """Adds ``path`` (absolute) to ``binds``, recording every symlink met on the way in ``links`` (path -> target)."""
    if depth > 40:
        raise OSError(f"too many levels of symbolic links resolving {path}")
    parts = [p for p in os.path.normpath(path).split("/") if p]
    cur = "/"
    for i, part in enumerate(parts):
        nxt = os.path.join(cur, part)
        if os.path.islink(nxt):
            target = os.readlink(nxt)
            links[nxt] = target
            rest = parts[i + 1 :]
            _resolve(os.path.join(os.path.normpath(os.path.join(cur, target)), *rest), binds, links, depth + 1)
            return
        cur = nxt
    if os.path.exists(cur):
        binds.add(cur)


def _covered(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def relocations() -> list[list[str]]:
    """[[host scratch dir, its place in the sandbox]...]: the prefixes ``sandbox_path`` rewrites."""
    return [[d, HOST_DIR + d] for d in sorted(set(SCRATCH_DIRS))]


def sandbox_path(path: str) -> str:
    """Where the host's (absolute, symlink-free) ``path`` appears inside a namespaces/bwrap sandbox."""
    return HOST_DIR + path if _covered(path, list(SCRATCH_DIRS)) else path


def fs_layout(python: str, expose_site_packages: bool = True, extra_ro_paths: tuple[str, ...] = ()) -> dict[str, list]:
    """{"binds": [[host path, sandbox path]...] (read-only), "symlinks": [[sandbox path, target]...], "relocate":
    ``relocations()``} for ``python``'s snippets.

    Binds are sorted and never nested (a path inside another bind is already there); symlinks inside a bind are too.
    """
    prefix, base, exec_prefix, base_exec, site_dirs = interpreter_paths(python)
    binds: set[str] = set()
    links: dict[str, str] = {}
    wanted = [*SYSTEM_PATHS, *(f"/etc/{e}" for e in ETC_ENTRIES), base, base_exec, python, *extra_ro_paths]
    if prefix != base:
        wanted.append(os.path.join(prefix, "pyvenv.cfg"))  # a venv interpreter started by a snippet finds its venv
    if expose_site_packages:
        wanted += [d for d in site_dirs if os.path.isdir(d)]
    for path in wanted:
        if os.path.lexists(path):
            _resolve(os.path.abspath(path), binds, links)
    roots: list[str] = []
    for path in sorted(binds):
        if not _covered(path, roots):
            roots.append(path)
    symlinks = []
    for path, target in sorted(links.items()):
        if _covered(os.path.dirname(path), roots):
            continue
        absolute = os.path.normpath(os.path.join(os.path.dirname(path), target))
        if sandbox_path(path) != path or sandbox_path(absolute) != absolute:
            target = sandbox_path(absolute)  # a relative target would resolve against the wrong (moved) parent
        symlinks.append([sandbox_path(path), target])
    binds = [[path, sandbox_path(path)] for path in roots]
    return {"binds": binds, "symlinks": symlinks, "relocate": relocations()}


def _ancestors(path: str) -> list[str]:
    """``path`` and its parents, without "/"."""
    out = []
    while path not in ("/", ""):
        out.append(path)
        path = os.path.dirname(path)
    return out


def bwrap_args(layout: dict[str, list], tmpfs_mb: int) -> list[str]:
    """bubblewrap options building the same root as the namespaces server does (then remounting it read-only)."""
    # Parent directories first, world-traversable: bubblewrap would otherwise copy the host's modes (/root is 0700).
    parents = {os.path.dirname(d) for _, d in layout["binds"]} | {os.path.dirname(p) for p, _ in layout["symlinks"]}
    ancestors = {a for p in parents for a in _ancestors(p)}
    args: list[str] = []
    for path in sorted(ancestors):
        args += ["--perms", "0755", "--dir", path]
    for src, dst in layout["binds"]:
        args += ["--ro-bind", src, dst]
    for path, target in layout["symlinks"]:
        args += ["--symlink", target, path]
    size = str(tmpfs_mb << 20)
    args += ["--dev", "/dev", "--proc", "/proc"]
    for path in ("/tmp", "/var/tmp", "/dev/shm"):
        args += ["--size", size, "--tmpfs", path]
    return [*args, "--remount-ro", "/"]
