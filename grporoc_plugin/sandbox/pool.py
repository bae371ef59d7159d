"""Host side of the sandbox: ``SandboxPool`` (fork server, fresh-subprocess or SandboxFusion backend) and the
process-wide default pool behind ``execute`` / ``aexecute``."""

from __future__ import annotations

import asyncio
import atexit
import base64
import concurrent.futures
import itertools
import logging
import math
import os
import resource
import selectors
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
import weakref

from grporoc_plugin.sandbox import _server
from grporoc_plugin.sandbox.config import ExecutionResult, SandboxConfig, SandboxUnavailableError
from grporoc_plugin.sandbox.layout import bwrap_args, fs_layout, sandbox_path

logger = logging.getLogger(__name__)

_HERE = os.path.dirname(os.path.abspath(__file__))
SERVER_PATH = os.path.join(_HERE, "_server.py")
RUNNER_PATH = os.path.join(_HERE, "_runner.py")
#: Environment marker on every sandbox process (server and snippets) so tests can find survivors.
MARKER_ENV = "GRPOROC_SANDBOX"


def run_marker(pool_marker: str) -> str:
    """Value of MARKER_ENV in every snippet process of a pool (the server and run supervisors carry the pool's)."""
    return pool_marker + ":run"


_REQUIRED_FEATURES = {
    "none": set(),
    "network": {"net"},
    "pid": {"pid"},
    "filesystem": {"mount"},
    "full": {"net", "pid", "mount"},
}


def _result_from_dict(d: dict) -> ExecutionResult:
    return ExecutionResult(
        status=d["status"],
        stdout=d["stdout"].decode("utf-8", "replace"),
        stderr=d["stderr"].decode("utf-8", "replace"),
        exit_code=d["exit_code"],
        duration_s=d["duration_s"],
        detail=d.get("detail", ""),
    )


def _sandbox_error(detail: str) -> ExecutionResult:
    return ExecutionResult(status="sandbox_error", detail=detail)


def _bad_input(code: object, stdin: object) -> ExecutionResult | None:
    """Malformed tool arguments are the snippet's error (exec_error), never an exception in the caller."""
    for name, value in (("code", code), ("input", stdin)):
        if not isinstance(value, str):
            return ExecutionResult(
                status="exec_error",
                stderr=f"TypeError: {name} must be a string, got {type(value).__name__}",
                exit_code=1,
            )
    return None


def bwrap_path() -> str | None:
    """The bubblewrap binary, if installed."""
    return shutil.which("bwrap")


#: Where the server's two source files appear inside bubblewrap (the repo itself stays hidden).
BWRAP_CODE_DIR = "/.grporoc-sandbox"


def _layout(cfg: SandboxConfig) -> dict[str, list]:
    return fs_layout(cfg.python, cfg.expose_site_packages, tuple(cfg.extra_ro_paths))


def _bwrap_command(bwrap: str, cfg: SandboxConfig, fd: int) -> list[str]:
    code = []
    for path in (SERVER_PATH, RUNNER_PATH):
        code += ["--ro-bind", path, f"{BWRAP_CODE_DIR}/{os.path.basename(path)}"]
    return [
        bwrap,
        "--die-with-parent",
        "--new-session",
        "--unshare-net",
        "--unshare-ipc",
        "--unshare-uts",
        *code,
        *bwrap_args(_layout(cfg), cfg.tmpfs_mb),
        "--chdir",
        "/",
        "--",
        sandbox_path(os.path.abspath(cfg.python)),  # an interpreter in a scratch dir is exposed elsewhere (layout.py)
        "-I",
        f"{BWRAP_CODE_DIR}/_server.py",
        str(fd),
    ]


PIDS_CGROUP_ROOT = "/sys/fs/cgroup/pids"
#: Prefix of every pool's cgroup and host temp directory: ``grporoc-sandbox-pool-<host pid>-<random>``.
RESOURCE_PREFIX = "grporoc-sandbox-"


def _owner_pid(name: str) -> int | None:
    """Host PID that created the pool behind a cgroup / temp dir name, None for names not of that form."""
    parts = name[len(RESOURCE_PREFIX) :].split("-")
    if not name.startswith(RESOURCE_PREFIX + "pool-") or len(parts) < 3 or not parts[1].isdigit():
        return None
    return int(parts[1])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sandbox_error_reply(detail: str) -> dict:
    """A fork-server reply for a run that never reached the server (status sandbox_error, counted as infra)."""
    return {
        "id": -1,
        "status": "sandbox_error",
        "exit_code": None,
        "stdout": b"",
        "stderr": b"",
        "detail": detail,
        "duration_s": 0.0,
    }


def sweep_stale(temp_dir: str | None = None) -> list[str]:
    """Removes cgroups and temp dirs of pools whose host process is gone (killed hosts, e.g. ``ray.kill``ed actors,
    cannot clean up after themselves). Returns what was removed; a cgroup with processes left is never touched."""
    removed = []
    for root in (PIDS_CGROUP_ROOT, temp_dir or tempfile.gettempdir()):
        try:
            names = os.listdir(root)
        except OSError:
            continue
        for name in names:
            owner = _owner_pid(name)
            if owner is None or owner == os.getpid() or _pid_alive(owner):
                continue
            path = os.path.join(root, name)
            try:
                if root == PIDS_CGROUP_ROOT:
                    os.rmdir(path)  # EBUSY while a task is left: then it is not stale
                else:
                    shutil.rmtree(path)
                removed.append(path)
            except OSError:
                pass
    return removed


def _cgroup_procs(path: str) -> list[int]:
    try:
        with open(os.path.join(path, "cgroup.procs")) as f:
            return [int(x) for x in f.read().split()]
    except (OSError, ValueError):
        return []


def _remove_cgroup(path: str, timeout_s: float = 10.0) -> bool:
    """SIGKILLs whatever is still in the pool's cgroup (every process there is the pool's: the server, its run
    supervisors and their snippets, which cannot leave it) and removes it once empty."""
    deadline = time.monotonic() + timeout_s
    while True:
        for pid in _cgroup_procs(path):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            os.rmdir(path)
            return True
        except FileNotFoundError:
            return True
        except OSError as e:
            if time.monotonic() > deadline:
                logger.error("sandbox cgroup %s could not be removed: %r (tasks %s)", path, e, _cgroup_procs(path))
                return False
        time.sleep(0.005)


def _pids_cgroup(pid: int, marker: str, max_tasks: int) -> str | None:
    """Puts the fork server (and so every run) in a cgroup v1 pids group capped at ``max_tasks``: a fork bomb stops
    there even for root, whom RLIMIT_NPROC does not bind. None where cgroups are not writable."""
    path = os.path.join(PIDS_CGROUP_ROOT, RESOURCE_PREFIX + marker)
    try:
        os.mkdir(path)
    except OSError:
        return None
    try:
        with open(os.path.join(path, "pids.max"), "w") as f:
            f.write(str(max_tasks))
        with open(os.path.join(path, "cgroup.procs"), "w") as f:
            f.write(str(pid))
        return path
    except OSError:
        try:
            os.rmdir(path)
        except OSError:
            pass
        return None


class _ForkServerClient:
    """One fork-server process and the socket to it; a reader thread resolves per-request futures."""

    def __init__(self, cfg: SandboxConfig, mode: str, marker: str, workdir_base: str):
        self.cfg, self.mode = cfg, mode
        parent, child = socket.socketpair()
        cmd = [cfg.python, "-I", SERVER_PATH, str(child.fileno())]
        if mode == "bwrap":
            cmd = _bwrap_command(bwrap_path() or "bwrap", cfg, child.fileno())
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", MARKER_ENV: marker}
        try:
            self.proc = subprocess.Popen(
                cmd,
                pass_fds=(child.fileno(),),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                start_new_session=True,
                cwd="/",
            )
        finally:
            child.close()
        self.sock = parent
        self.cgroup = _pids_cgroup(self.proc.pid, marker, cfg.concurrency * cfg.max_processes + 16)
        self._lock = threading.Lock()
        self._futures: dict[int, concurrent.futures.Future] = {}
        self._ids = itertools.count()
        self.alive = True
        env_for_runs = dict(cfg.env)
        env_for_runs[MARKER_ENV] = run_marker(marker)
        self._env = env_for_runs
        try:
            parent.settimeout(cfg.start_timeout_s)
            _server.send_frame(
                parent,
                {
                    "isolation": "none" if mode == "none" else mode,
                    "tmpfs_mb": cfg.tmpfs_mb,
                    "workdir_base": workdir_base,
                    "max_concurrency": cfg.concurrency,
                    "preload": list(cfg.preload),
                    "fs": _layout(cfg) if mode == "namespaces" else None,
                    "run_uid": cfg.run_uid,
                },
            )
            hello = _server.recv_frame(parent)
        except (OSError, EOFError) as e:
            self.kill()
            raise SandboxUnavailableError(f"sandbox fork server ({mode}) failed to start: {e!r}") from e
        if not isinstance(hello, dict) or not hello.get("ready"):
            self.kill()
            why = hello.get("error") if isinstance(hello, dict) else f"exit {self.proc.returncode}"
            raise SandboxUnavailableError(f"sandbox fork server ({mode}) failed to start: {why}")
        parent.settimeout(None)
        self.server_pid: int = hello["pid"]
        self.features: set[str] = set(hello["features"]) | ({"pids-cgroup"} if self.cgroup else set())
        self.notes: list[str] = hello["notes"]
        self._reader = threading.Thread(target=self._read_loop, name="grporoc-sandbox-reader", daemon=True)
        self._reader.start()

    def _read_loop(self) -> None:
        try:
            while True:
                msg = _server.recv_frame(self.sock)
                if msg is None:
                    break
                with self._lock:
                    fut = self._futures.pop(msg["id"], None)
                if fut is not None and not fut.done():
                    fut.set_result(msg)
        except (OSError, EOFError, ValueError) as e:
            logger.warning("sandbox fork server connection failed: %r", e)
        finally:
            with self._lock:
                self.alive = False
                futures, self._futures = self._futures, {}
            for fut in futures.values():
                if not fut.done():
                    fut.set_result(_sandbox_error_reply("sandbox fork server exited"))

    def submit(self, op: str, **fields) -> concurrent.futures.Future:
        fut: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            if not self.alive:
                raise ConnectionError("fork server is not running")
            rid = next(self._ids)
            self._futures[rid] = fut
            try:
                _server.send_frame(self.sock, {"op": op, "id": rid, **fields})
            except OSError as e:
                self._futures.pop(rid, None)
                self.alive = False
                raise ConnectionError(f"fork server connection lost: {e!r}") from e
        return fut

    def run(self, code: str, stdin: str, timeout_s: float, memory_mb: int) -> concurrent.futures.Future:
        cfg = self.cfg
        return self.submit(
            "run",
            code=code,
            stdin=stdin,
            timeout_s=float(timeout_s),
            memory_mb=int(memory_mb),
            max_output_bytes=cfg.max_output_bytes,
            max_file_bytes=cfg.max_file_bytes,
            max_open_files=cfg.max_open_files,
            max_processes=cfg.max_processes,
            env=self._env,
        )

    def stats(self) -> dict:
        return self.submit("stats").result(timeout=10)["stats"]

    def kill(self) -> None:
        self.alive = False
        try:
            self.sock.close()
        except OSError:
            pass
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            logger.error("sandbox fork server %d did not exit after SIGKILL", self.proc.pid)
        if self.cgroup:
            # Its run supervisors and snippets die asynchronously (parent-death signals, PID-namespace teardown; under
            # bwrap even the server itself outlives bwrap for a moment): kill what is left, then remove the cgroup.
            _remove_cgroup(self.cgroup)
            self.cgroup = None

    def close(self) -> None:
        with self._lock:
            if self.alive:
                try:
                    _server.send_frame(self.sock, {"op": "shutdown"})
                except OSError:
                    pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self.kill()


# ----------------------------------------------------------------------------------------------------------------------
# Fresh-subprocess backend (the release's design; also the benchmark baseline)
# ----------------------------------------------------------------------------------------------------------------------


def _subprocess_run(
    cfg: SandboxConfig, code: str, stdin: str, timeout_s: float, memory_mb: int, marker: str, base: str
) -> ExecutionResult:
    t0 = time.monotonic()
    workdir = tempfile.mkdtemp(prefix="run-", dir=base)
    st_r, st_w = os.pipe()
    try:
        code_path = os.path.join(workdir, ".snippet.py")
        with open(code_path, "w", encoding="utf-8", errors="surrogateescape") as f:
            f.write(code)
        mem = memory_mb << 20
        cpu = int(math.ceil(timeout_s)) + 1

        def confine() -> None:
            for what, lim in (
                (resource.RLIMIT_AS, mem),
                (resource.RLIMIT_CORE, 0),
                (resource.RLIMIT_CPU, cpu),
                (resource.RLIMIT_FSIZE, cfg.max_file_bytes),
                (resource.RLIMIT_NOFILE, cfg.max_open_files),
                (resource.RLIMIT_NPROC, cfg.max_processes),
            ):
                resource.setrlimit(what, (lim, lim))

        env = dict(cfg.env, HOME=workdir, TMPDIR=workdir, PWD=workdir, **{MARKER_ENV: run_marker(marker)})
        proc = subprocess.Popen(
            [cfg.python, "-I", RUNNER_PATH, code_path, str(st_w)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(st_w,),
            cwd=workdir,
            env=env,
            preexec_fn=confine,
            start_new_session=True,
        )
        os.close(st_w)
        st_w = -1
        status = None
        bufs: dict[int, bytearray] = {}
        try:
            proc.stdin.write(stdin.encode("utf-8", "surrogateescape"))
        except BrokenPipeError:
            pass
        proc.stdin.close()
        sel = selectors.DefaultSelector()
        for f in (proc.stdout, proc.stderr):
            sel.register(f, selectors.EVENT_READ)
            bufs[f.fileno()] = bytearray()
        deadline = t0 + timeout_s
        open_count = 2
        while open_count and status is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                status = "timeout"
                break
            for key, _ in sel.select(remaining):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    open_count -= 1
                    continue
                bufs[key.fd] += chunk
                if len(bufs[key.fd]) > cfg.max_output_bytes:
                    status = "output_limit"
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the group; what escaped with setsid survives (release behaviour)
        except OSError:
            pass
        rc = proc.wait()
        os.set_blocking(st_r, False)
        try:
            exc_name = os.read(st_r, 256).decode("utf-8", "replace")
        except BlockingIOError:
            exc_name = ""
        if status is None:
            if rc == 0:
                status = "ok"
            elif exc_name == "MemoryError":
                status = "memory_error"
            elif rc == -signal.SIGXCPU:
                status = "timeout"
            else:
                status = "exec_error"
        cap = cfg.max_output_bytes
        return ExecutionResult(
            status=status,
            stdout=bytes(bufs[proc.stdout.fileno()][:cap]).decode("utf-8", "replace"),
            stderr=bytes(bufs[proc.stderr.fileno()][:cap]).decode("utf-8", "replace"),
            exit_code=rc,
            duration_s=time.monotonic() - t0,
        )
    except OSError as e:
        return _sandbox_error(f"subprocess backend failed: {e!r}")
    finally:
        os.close(st_r)
        if st_w >= 0:
            os.close(st_w)
        shutil.rmtree(workdir, ignore_errors=True)


# ----------------------------------------------------------------------------------------------------------------------
# SandboxFusion backend
# ----------------------------------------------------------------------------------------------------------------------


def remote_script(code: str) -> str:
    """A self-contained script with the release semantics for a remote executor (the runner plus the snippet)."""
    with open(RUNNER_PATH, encoding="utf-8") as f:
        src = f.read()
    src = src.split('\nif __name__ == "__main__":')[0]
    blob = base64.b64encode(code.encode("utf-8", "surrogateescape")).decode()
    return (
        f"{src}\n\nimport base64 as _b64\n_rc = run_snippet(_b64.b64decode({blob!r}).decode('utf-8', "
        "'surrogateescape'))\nflush_std()\nos._exit(_rc)\n"
    )


def _sandbox_fusion_run(cfg: SandboxConfig, code: str, stdin: str, timeout_s: float, memory_mb: int) -> ExecutionResult:
    from verl.utils.reward_score.sandbox_fusion.utils import call_sandbox_api

    t0 = time.monotonic()
    resp, err = call_sandbox_api(
        cfg.sandbox_fusion_url,
        remote_script(code),
        stdin,
        compile_timeout=10,
        run_timeout=max(1, int(math.ceil(timeout_s))),
        memory_limit_mb=memory_mb,
    )
    if resp is None or not isinstance(resp, dict):
        return _sandbox_error(f"SandboxFusion call failed: {err}")
    run = resp.get("run_result") or {}
    if (
        resp.get("status") == "SandboxError"
        or not isinstance(run, dict)
        or run.get("status")
        not in (
            "Finished",
            "TimeLimitExceeded",
        )
    ):
        return _sandbox_error(f"SandboxFusion error: status={resp.get('status')!r} message={resp.get('message')!r}")
    stdout, stderr = str(run.get("stdout") or ""), str(run.get("stderr") or "")
    rc = run.get("return_code")
    cap = cfg.max_output_bytes
    if run["status"] == "TimeLimitExceeded":
        status = "timeout"
    elif len(stdout.encode()) > cap or len(stderr.encode()) > cap:
        status = "output_limit"
    elif rc == 0:
        status = "ok"
    elif stderr.startswith("MemoryError"):
        status = "memory_error"
    else:
        status = "exec_error"
    return ExecutionResult(
        status=status,
        stdout=stdout[:cap],
        stderr=stderr[:cap],
        exit_code=rc,
        duration_s=float(run.get("execution_time") or (time.monotonic() - t0)),
    )


# ----------------------------------------------------------------------------------------------------------------------
# Pool
# ----------------------------------------------------------------------------------------------------------------------


class SandboxPool:
    """Reusable executor of untrusted snippets. Thread-safe; ``aexecute`` for asyncio callers.

    The isolation actually in force is detected at start-up (``isolation``: e.g. "netns+mntns+pidns", "bwrap+pidns",
    "rlimits-only", "remote") and never silently below ``config.require_isolation``.
    """

    def __init__(self, config: SandboxConfig | None = None):
        self.config = cfg = config or SandboxConfig()
        # The host PID in the name lets a later pool remove what a killed host left behind (sweep_stale).
        self.marker = f"pool-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self._lock = threading.Lock()
        self._client: _ForkServerClient | None = None
        self._closed = False
        self._base = ""
        self._threads: concurrent.futures.ThreadPoolExecutor | None = None
        self.features: frozenset[str] = frozenset()
        self.notes: list[str] = []
        if cfg.backend == "sandbox_fusion":
            self.isolation = "remote"
            self._threads = concurrent.futures.ThreadPoolExecutor(
                cfg.sandbox_fusion_max_concurrency, thread_name_prefix="grporoc-sandbox-remote"
            )
            if cfg.require_isolation != "none":
                logger.info("sandbox isolation is the remote SandboxFusion service's; require_isolation not checked")
            return
        sweep_stale(cfg.workdir_base or None)
        self._base = tempfile.mkdtemp(prefix=f"{RESOURCE_PREFIX}{self.marker}-", dir=cfg.workdir_base or None)
        _live_pools.add(self)
        try:
            if cfg.backend == "subprocess":
                self.isolation = "rlimits-only"
                self._threads = concurrent.futures.ThreadPoolExecutor(
                    cfg.concurrency, thread_name_prefix="grporoc-sandbox-subprocess"
                )
            else:
                self._mode = self._pick_mode()
                self._client = self._start_client()
                self.features = frozenset(self._client.features)
                self.notes = [*self.notes, *self._client.notes]
                self.isolation = self._describe()
        except BaseException:
            self.close()  # a failed start leaves no server, cgroup or directory behind
            raise
        self._check_required()

    # -- set-up

    def _pick_mode(self) -> str:
        mode = self.config.isolation
        if mode == "bwrap" and bwrap_path() is None:
            raise SandboxUnavailableError("SandboxConfig.isolation='bwrap' but the bwrap binary is not installed")
        if mode != "auto":
            return mode
        # Namespaces set up by the server itself are fastest; fall back to bubblewrap, then to rlimits only.
        probe = self._try_client("namespaces")
        if probe is not None and {"net", "pid", "mount"} <= probe.features:
            self._probe = probe
            return "namespaces"
        if probe is not None:
            probe.close()
        if bwrap_path() is not None:
            probe = self._try_client("bwrap")
            if probe is not None:
                self._probe = probe
                return "bwrap"
        return "none"

    def _try_client(self, mode: str) -> _ForkServerClient | None:
        try:
            return _ForkServerClient(self.config, mode, self.marker, self._base)
        except SandboxUnavailableError as e:
            self.notes.append(str(e))
            return None

    def _start_client(self) -> _ForkServerClient:
        probe = getattr(self, "_probe", None)
        if probe is not None:
            self._probe = None
            return probe
        return _ForkServerClient(self.config, self._mode, self.marker, self._base)

    def _describe(self) -> str:
        f = self.features
        if self._mode == "bwrap":
            return "+".join(["bwrap"] + [n for k, n in (("pid", "pidns"), ("pids-cgroup", "cgroup")) if k in f])
        parts = [
            name
            for key, name in (("net", "netns"), ("mount", "mntns"), ("pid", "pidns"), ("pids-cgroup", "cgroup"))
            if key in f
        ]
        if not {"net", "mount", "pid"} & f:
            parts.insert(0, "rlimits-only")
        return "+".join(parts)

    def _check_required(self) -> None:
        need = _REQUIRED_FEATURES[self.config.require_isolation]
        missing = need - set(self.features)
        if missing:
            self.close()
            raise SandboxUnavailableError(
                f"SandboxConfig.require_isolation={self.config.require_isolation!r} needs {sorted(need)} but only "
                f"{self.isolation!r} is available here (missing {sorted(missing)}). Run as root, allow user "
                f"namespaces, or install bubblewrap. Details: {'; '.join(self.notes) or 'none'}"
            )

    # -- execution

    def _client_or_restart(self) -> _ForkServerClient:
        with self._lock:
            if self._closed:
                raise RuntimeError("SandboxPool is closed")
            if self._client is None or not self._client.alive:
                old = self._client
                if old is not None:
                    logger.warning("sandbox fork server died; restarting it")
                    old.kill()
                self._client = self._start_client()
            return self._client

    def _submit(self, code: str, stdin: str, timeout_s: float, memory_mb: int) -> concurrent.futures.Future:
        try:
            return self._client_or_restart().run(code, stdin, timeout_s, memory_mb)
        except (ConnectionError, SandboxUnavailableError) as e:
            fut: concurrent.futures.Future = concurrent.futures.Future()
            fut.set_result(_sandbox_error_reply(f"sandbox unavailable: {e}"))
            return fut

    def _limits(self, timeout_s: float | None, memory_mb: int | None) -> tuple[float, int]:
        t = self.config.timeout_s if timeout_s is None else float(timeout_s)
        m = self.config.memory_mb if memory_mb is None else int(memory_mb)
        if not t > 0 or m <= 0:
            raise ValueError(f"timeout_s and memory_mb must be positive, got {timeout_s!r}, {memory_mb!r}")
        return t, m

    def execute(
        self, code: str, stdin: str = "", *, timeout_s: float | None = None, memory_mb: int | None = None
    ) -> ExecutionResult:
        """Runs ``code`` with ``stdin``; blocks until the result (never raises for the snippet's behaviour)."""
        bad = _bad_input(code, stdin)
        if bad is not None:
            return bad
        t, m = self._limits(timeout_s, memory_mb)
        backend = self.config.backend
        if backend == "forkserver":
            return _result_from_dict(self._submit(code, stdin, t, m).result())
        if self._closed:
            raise RuntimeError("SandboxPool is closed")
        if backend == "subprocess":
            return _subprocess_run(self.config, code, stdin, t, m, self.marker, self._base)
        return _sandbox_fusion_run(self.config, code, stdin, t, m)

    async def aexecute(
        self, code: str, stdin: str = "", *, timeout_s: float | None = None, memory_mb: int | None = None
    ) -> ExecutionResult:
        """Async ``execute``: the event loop is never blocked."""
        bad = _bad_input(code, stdin)
        if bad is not None:
            return bad
        t, m = self._limits(timeout_s, memory_mb)
        if self.config.backend == "forkserver":
            return _result_from_dict(await asyncio.wrap_future(self._submit(code, stdin, t, m)))
        if self._closed or self._threads is None:
            raise RuntimeError("SandboxPool is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, lambda: self.execute(code, stdin, timeout_s=t, memory_mb=m))

    # -- introspection / lifecycle

    @property
    def server_pid(self) -> int | None:
        """PID of the fork server (host PID namespace), None for other backends."""
        return None if self._client is None else self._client.proc.pid

    def stats(self) -> dict:
        """Live numbers from the fork server: active runs, queued runs, run directories present."""
        if self._client is None:
            return {"active": 0, "queued": 0, "workdirs": len(os.listdir(self._base)) if self._base else 0}
        return self._client_or_restart().stats()

    def close(self) -> None:
        """Stops the fork server (killing any run in flight) and removes the pool's directories."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            client, self._client = self._client, None
        if client is not None:
            client.close()
        if self._threads is not None:
            self._threads.shutdown(wait=True)
        if self._base:
            shutil.rmtree(self._base, ignore_errors=True)
        _live_pools.discard(self)

    def __enter__(self) -> SandboxPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            if not self._closed:
                self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


# ----------------------------------------------------------------------------------------------------------------------
# Process-wide default pool
# ----------------------------------------------------------------------------------------------------------------------

_default_pool: SandboxPool | None = None
_default_lock = threading.Lock()
#: Every open pool of this process, closed at exit: a pool a caller forgot would otherwise leave its cgroup and
#: directory behind (``__del__`` cannot be relied on during interpreter shutdown).
_live_pools: weakref.WeakSet[SandboxPool] = weakref.WeakSet()


def default_pool() -> SandboxPool:
    """The lazily created process-wide pool used by ``execute`` / ``aexecute`` (default ``SandboxConfig``)."""
    global _default_pool
    with _default_lock:
        if _default_pool is None or _default_pool._closed:
            _default_pool = SandboxPool(SandboxConfig())
        return _default_pool


def close_default_pool() -> None:
    """Closes the default pool (a later ``execute`` creates a new one)."""
    global _default_pool
    with _default_lock:
        pool, _default_pool = _default_pool, None
    if pool is not None:
        pool.close()


def close_all_pools() -> None:
    """Closes the default pool and every other pool still open in this process (registered with atexit)."""
    close_default_pool()
    for pool in list(_live_pools):
        try:
            pool.close()
        except Exception:  # noqa: BLE001 - keep closing the others
            logger.exception("closing a sandbox pool at exit failed")


atexit.register(close_all_pools)


def execute(
    code: str, stdin: str = "", *, timeout_s: float | None = None, memory_mb: int | None = None
) -> ExecutionResult:
    """Runs ``code`` in the default pool (see ``SandboxPool.execute``)."""
    return default_pool().execute(code, stdin, timeout_s=timeout_s, memory_mb=memory_mb)


async def aexecute(
    code: str, stdin: str = "", *, timeout_s: float | None = None, memory_mb: int | None = None
) -> ExecutionResult:
    """Async ``execute`` in the default pool."""
    return await default_pool().aexecute(code, stdin, timeout_s=timeout_s, memory_mb=memory_mb)
