"""The fork-server backend: one sandbox server process per pool (``server/_broker.py``), optionally under bubblewrap,
started from the process-lifetime launcher thread, restarted when it dies."""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
from typing import NoReturn

from grporoc_plugin.sandbox import launcher
from grporoc_plugin.sandbox.backends.base import PoolContext, done, register_backend, sandbox_error, to_result
from grporoc_plugin.sandbox.cgroups import RESOURCE_PREFIX, PoolCgroups, kill_all
from grporoc_plugin.sandbox.config import SandboxConfig, SandboxStartInterruptedError, SandboxUnavailableError
from grporoc_plugin.sandbox.layout import bwrap_args, fs_layout, sandbox_path
from grporoc_plugin.sandbox.seccomp import filter_bpf
from grporoc_plugin.sandbox.server import _broker
from grporoc_plugin.sandbox.server._linux import remove_tree

logger = logging.getLogger(__name__)

SERVER_DIR = os.path.dirname(os.path.abspath(_broker.__file__))
SERVER_PATH = os.path.join(SERVER_DIR, "_broker.py")
#: Where the server's source directory appears inside bubblewrap (the repo itself stays hidden).
BWRAP_CODE_DIR = "/.grporoc-sandbox"
#: Environment marker on every sandbox process (server and snippets) so tests can find survivors.
MARKER_ENV = "GRPOROC_SANDBOX"
#: Layers in the order ``describe`` names them.
LAYER_NAMES = (
    ("userns", "userns"),
    ("net", "netns"),
    ("runnet", "runnetns"),
    ("ipc", "ipcns"),
    ("mount", "mntns"),
    ("pid", "pidns"),
    ("scratch", "tmpfs"),
    ("memcg", "memcg"),
    ("pidcg", "pidcg"),
    ("seccomp", "seccomp"),
    ("uid", "uid"),
)


def run_marker(pool_marker: str) -> str:
    """Value of MARKER_ENV in every snippet process of a pool (the server, template and zygotes carry the pool's)."""
    return pool_marker + ":run"


def bwrap_path() -> str | None:
    """The bubblewrap binary, if installed."""
    return shutil.which("bwrap")


def layout_of(cfg: SandboxConfig) -> dict[str, list]:
    return fs_layout(cfg.python, cfg.expose_site_packages, tuple(cfg.extra_ro_paths))


def bwrap_command(bwrap: str, cfg: SandboxConfig, fd: int) -> list[str]:
    # Unprivileged, bubblewrap maps us to root of its own user namespace with every capability there, so the server
    # can give each run its own namespaces as it does as root.
    user = [] if os.geteuid() == 0 else ["--unshare-user", "--uid", "0", "--gid", "0"]
    return [
        bwrap,
        "--die-with-parent",
        "--new-session",
        *user,
        "--cap-add",
        "ALL",
        "--unshare-net",
        "--unshare-ipc",
        "--unshare-uts",
        "--ro-bind",
        SERVER_DIR,
        BWRAP_CODE_DIR,
        *bwrap_args(layout_of(cfg), cfg.tmpfs_mb),
        "--chdir",
        "/",
        "--",
        sandbox_path(os.path.abspath(cfg.python)),  # an interpreter in a scratch dir is exposed elsewhere (layout.py)
        "-I",
        f"{BWRAP_CODE_DIR}/_broker.py",
        str(fd),
    ]


def describe(mode: str, features: frozenset[str]) -> str:
    """The isolation string of a pool, e.g. "netns+runnetns+ipcns+mntns+pidns+tmpfs+memcg+pidcg+seccomp+uid"."""
    parts = [name for key, name in LAYER_NAMES if key in features]
    if mode == "bwrap":
        parts.insert(0, "bwrap")
    elif not {"net", "mount", "pid"} & features:
        parts.insert(0, "rlimits-only")
    return "+".join(parts)


class ForkServerClient:
    """One fork-server process and the socket to it; a reader thread resolves per-request futures."""

    def __init__(self, cfg: SandboxConfig, mode: str, ctx: PoolContext, cgroups: PoolCgroups | None, bpf: bytes | None):
        self.cfg, self.mode = cfg, mode
        parent, child = socket.socketpair()
        cg = cgroups.open_fds() if cgroups is not None else None
        cmd = [cfg.python, "-I", SERVER_PATH, str(child.fileno())]
        if mode == "bwrap":
            cmd = bwrap_command(bwrap_path() or "bwrap", cfg, child.fileno())
        pass_fds = (child.fileno(), *{v for k, v in (cg or {}).items() if k.endswith("_fd") and v is not None})
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", MARKER_ENV: ctx.marker}
        try:
            # From the launcher thread: the server's parent-death signal then fires with the process, not a thread.
            self.proc = launcher.launch(
                lambda: subprocess.Popen(
                    cmd,
                    pass_fds=pass_fds,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    start_new_session=True,
                    cwd="/",
                )
            )
        finally:
            child.close()
        self.sock = parent
        self._lock = threading.Lock()
        self._futures: dict[int, concurrent.futures.Future] = {}
        self._ids = itertools.count()
        self.alive = True
        try:
            if cgroups is not None:
                cgroups.adopt(self.proc.pid)  # before the config: the template and zygotes are forked inside
            parent.settimeout(cfg.start_timeout_s)
            _broker.send_frame(parent, self._server_config(cfg, mode, ctx, cg, bpf))
            hello = _broker.recv_frame(parent)
        except TimeoutError:
            self.kill()
            raise SandboxStartInterruptedError(
                f"sandbox fork server ({mode}) did not start within start_timeout_s={cfg.start_timeout_s}"
            ) from None
        except (OSError, EOFError) as e:
            self._fail_start(repr(e))
        if not isinstance(hello, dict):
            self._fail_start("it exited before saying hello")
        if not hello.get("ready"):
            self.kill()
            error = SandboxStartInterruptedError if hello.get("interrupted") else SandboxUnavailableError
            raise error(f"sandbox fork server ({mode}) failed to start: {hello.get('error')}")
        parent.settimeout(None)
        self.server_pid: int = hello["pid"]
        self.features: frozenset[str] = frozenset(hello["features"])
        self.notes: list[str] = hello["notes"]
        self._reader = threading.Thread(target=self._read_loop, name="grporoc-sandbox-reader", daemon=True)
        self._reader.start()

    @staticmethod
    def _server_config(cfg: SandboxConfig, mode: str, ctx: PoolContext, cg: dict | None, bpf: bytes | None) -> dict:
        return {
            "isolation": mode,
            "tmpfs_mb": cfg.tmpfs_mb,
            "workdir_base": ctx.base_dir,
            "slots": cfg.concurrency,
            "preload": list(cfg.preload),
            "fs": layout_of(cfg) if mode == "namespaces" else None,
            "run_uid": cfg.run_uid,
            "seccomp_bpf": bpf,
            "cgroup": cg,
            "disable": list(cfg.disable_layers),
            "max_output_bytes": cfg.max_output_bytes,
            "max_file_bytes": cfg.max_file_bytes,
            "max_open_files": cfg.max_open_files,
            "max_processes": cfg.max_processes,
            "env": {**cfg.env, MARKER_ENV: run_marker(ctx.marker)},
            "start_timeout_s": cfg.start_timeout_s,
        }

    def _read_loop(self) -> None:
        try:
            while True:
                msg = _broker.recv_frame(self.sock)
                if msg is None:
                    break
                with self._lock:
                    fut = self._futures.pop(msg["id"], None)
                if fut is not None and not fut.done():
                    fut.set_result(msg.get("stats") if "stats" in msg else to_result(msg))
        except (OSError, EOFError, ValueError) as e:
            logger.warning("sandbox fork server connection failed: %r", e)
        finally:
            with self._lock:
                self.alive = False
                futures, self._futures = self._futures, {}
            for fut in futures.values():
                if not fut.done():
                    fut.set_result(sandbox_error("sandbox fork server exited"))

    def submit(self, op: str, **fields) -> concurrent.futures.Future:
        fut: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            if not self.alive:
                raise ConnectionError("fork server is not running")
            rid = next(self._ids)
            self._futures[rid] = fut
            try:
                _broker.send_frame(self.sock, {"op": op, "id": rid, **fields})
            except OSError as e:
                self._futures.pop(rid, None)
                self.alive = False
                raise ConnectionError(f"fork server connection lost: {e!r}") from e
        return fut

    def _fail_start(self, why: str) -> NoReturn:
        """The server went away during start. Killed by SIGKILL, it was a fault from outside (an operator, the OOM
        killer), not a missing capability: ``SandboxStartInterruptedError``, on which ``auto`` does not fall back."""
        try:
            # its own exit status, read before kill() would put a SIGKILL there (the connection drops a moment before
            # the process is reaped; a loaded machine can take seconds)
            rc = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            rc = None
        self.kill()
        # bubblewrap reports its child's death by a signal as 128 + the signal
        if rc == -signal.SIGKILL or (self.mode == "bwrap" and rc == 128 + signal.SIGKILL):
            raise SandboxStartInterruptedError(
                f"sandbox fork server ({self.mode}) was killed (SIGKILL) during start: {why}"
            )
        status = "still running" if rc is None else self.describe_returncode(rc)
        raise SandboxUnavailableError(f"sandbox fork server ({self.mode}) failed to start ({status}): {why}")

    @staticmethod
    def describe_returncode(rc: int) -> str:
        return f"killed by signal {-rc}" if rc < 0 else f"exit status {rc}"

    def exit_description(self) -> str:
        try:
            rc = self.proc.wait(timeout=1)  # the connection drops a moment before the process is reaped
        except subprocess.TimeoutExpired:
            return "connection lost"
        return self.describe_returncode(rc)

    def kill(self) -> None:
        self.alive = False
        try:
            self.sock.close()
        except OSError:
            pass
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # server, template, zygotes (runs die with their zygote)
            except OSError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            logger.error("sandbox fork server %d did not exit after SIGKILL", self.proc.pid)

    def close(self) -> None:
        with self._lock:
            if self.alive:
                try:
                    _broker.send_frame(self.sock, {"op": "shutdown"})
                except OSError:
                    pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self.kill()


@register_backend("forkserver")
class ForkServerBackend:
    """Runs snippets through a fork server (see ``server/``); the isolation mode is probed at start-up."""

    def __init__(self, cfg: SandboxConfig, ctx: PoolContext):
        self.cfg, self.ctx = cfg, ctx
        self.notes: list[str] = []
        self._lock = threading.Lock()
        self._closed = False
        self.cgroups = None
        if not {"memcg", "pidcg"} <= set(cfg.disable_layers):
            self.cgroups = PoolCgroups.create(
                RESOURCE_PREFIX + ctx.marker, cfg.concurrency, cfg.max_processes, self.notes
            )
        self.bpf = None if "seccomp" in cfg.disable_layers else filter_bpf()
        if self.bpf is None and "seccomp" not in cfg.disable_layers:
            self.notes.append("no seccomp filter: libseccomp (pyseccomp, libseccomp2) is not available here")
        try:
            self.mode, self.client = self._start_first()
        except BaseException:
            self._release_cgroups()
            raise
        self.features = self.client.features
        self.notes += self.client.notes
        self.isolation = describe(self.mode, self.features)

    def _start(self, mode: str) -> ForkServerClient:
        return ForkServerClient(self.cfg, mode, self.ctx, self.cgroups, self.bpf)

    def _start_first(self) -> tuple[str, ForkServerClient]:
        mode = self.cfg.isolation
        if mode == "bwrap" and bwrap_path() is None:
            raise SandboxUnavailableError(
                "SandboxConfig.isolation='bwrap' but the bwrap binary is not installed (apt-get install bubblewrap)"
            )
        if mode != "auto":
            return mode, self._start_retrying(mode)
        # Namespaces set up by the server itself are fastest; fall back to bubblewrap, then to rlimits only, but only
        # on what the machine reports: an interrupted start is retried, never a reason for weaker isolation.
        tried = []
        for candidate in ("namespaces", "bwrap"):
            if candidate == "bwrap" and bwrap_path() is None:
                tried.append("bwrap: not installed")
                continue
            try:
                client = self._start_retrying(candidate)
            except SandboxStartInterruptedError:
                raise
            except SandboxUnavailableError as e:
                tried.append(f"{candidate}: {e}")
                continue
            wanted = {"net", "mount"} | (set() if "pidns" in self.cfg.disable_layers else {"pid"})
            if wanted <= client.features:
                self._warn_fallback(candidate, tried)
                return candidate, client
            tried.append(f"{candidate}: only {sorted(client.features)} ({'; '.join(client.notes)})")
            client.close()
            self._forget_server()
        self._warn_fallback("none", tried)
        return "none", self._start_retrying("none")

    #: Starts of one isolation mode tried when each is interrupted (killed, timed out) before giving up.
    START_ATTEMPTS = 3

    def _start_retrying(self, mode: str) -> ForkServerClient:
        for attempt in range(1, self.START_ATTEMPTS + 1):
            try:
                return self._start(mode)
            except SandboxStartInterruptedError as e:
                if attempt == self.START_ATTEMPTS:
                    raise
                logger.warning("%s; starting it again (attempt %d of %d)", e, attempt + 1, self.START_ATTEMPTS)
                self._forget_server()
        raise AssertionError("unreachable")

    def _warn_fallback(self, mode: str, tried: list[str]) -> None:
        self.notes += tried
        if tried:
            logger.warning("sandbox isolation=auto fell back to %r (weaker isolation): %s", mode, " | ".join(tried))

    def _forget_server(self) -> None:
        """After a server is gone: kill whatever it left in the pool's cgroups (its runs die with it; this makes it
        certain) and remove its run directories (runs without scratch tmpfs)."""
        if self.cgroups is not None:
            for path in self.cgroups.paths:
                kill_all(path)
        for name in os.listdir(self.ctx.base_dir):
            try:
                remove_tree(os.path.join(self.ctx.base_dir, name))
            except OSError as e:
                logger.error("sandbox run directory %s could not be removed: %r", name, e)

    def _client(self) -> ForkServerClient:
        with self._lock:
            if self._closed:
                raise RuntimeError("SandboxPool is closed")
            if not self.client.alive:
                old = self.client
                logger.warning("sandbox fork server died (%s); restarting it", old.exit_description())
                old.kill()
                self._forget_server()
                self.client = self._start(self.mode)
            return self.client

    def submit(self, code: str, stdin: str, timeout_s: float, memory_mb: int) -> concurrent.futures.Future:
        try:
            return self._client().submit("run", code=code, stdin=stdin, timeout_s=timeout_s, memory_mb=memory_mb)
        except (ConnectionError, SandboxUnavailableError) as e:
            return done(sandbox_error(f"sandbox unavailable: {e}"))

    def stats(self) -> dict:
        return self._client().submit("stats").result(timeout=10)

    @property
    def server_pid(self) -> int:
        return self.client.proc.pid

    def _release_cgroups(self) -> None:
        if self.cgroups is not None:
            self.cgroups.remove()
            self.cgroups = None

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.client.close()
        self._release_cgroups()
