"""The fresh-subprocess backend: a new ``python -I _runner.py`` per run with rlimits (the release's design; no
namespaces, no filesystem isolation). Kept for comparison and for hosts where the fork server cannot run."""

from __future__ import annotations

import concurrent.futures
import math
import os
import resource
import selectors
import signal
import subprocess
import tempfile
import time

from grporoc_plugin.sandbox.backends.base import PoolContext, register_backend, sandbox_error, to_result
from grporoc_plugin.sandbox.backends.forkserver import MARKER_ENV, run_marker
from grporoc_plugin.sandbox.config import ExecutionResult, SandboxConfig
from grporoc_plugin.sandbox.server import _runner, _status
from grporoc_plugin.sandbox.server._linux import remove_tree

RUNNER_PATH = os.path.abspath(_runner.__file__)


@register_backend("subprocess")
class SubprocessBackend:
    isolation = "rlimits-only"
    features: frozenset[str] = frozenset()

    def __init__(self, cfg: SandboxConfig, ctx: PoolContext):
        self.cfg, self.ctx = cfg, ctx
        self.notes: list[str] = ["fresh-subprocess backend: rlimits and a process group only"]
        self._threads = concurrent.futures.ThreadPoolExecutor(cfg.concurrency, "grporoc-sandbox-subprocess")

    def submit(self, code: str, stdin: str, timeout_s: float, memory_mb: int) -> concurrent.futures.Future:
        return self._threads.submit(self._run, code, stdin, timeout_s, memory_mb)

    def stats(self) -> dict:
        return {"active": 0, "queued": 0, "workdirs": len(os.listdir(self.ctx.base_dir))}

    def close(self) -> None:
        self._threads.shutdown(wait=True)

    def _run(self, code: str, stdin: str, timeout_s: float, memory_mb: int) -> ExecutionResult:
        cfg = self.cfg
        workdir = tempfile.mkdtemp(prefix="run-", dir=self.ctx.base_dir)
        rep_r, rep_w = os.pipe()
        cpu = int(math.ceil(timeout_s)) + 1
        try:
            code_path = os.path.join(workdir, ".snippet.py")
            with open(code_path, "w", encoding="utf-8", errors="surrogatepass") as f:
                f.write(code)
            mem = memory_mb << 20

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
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past RLIMIT_FSIZE: EFBIG, the snippet's error

            env = dict(cfg.env, HOME=workdir, TMPDIR=workdir, PWD=workdir, **{MARKER_ENV: run_marker(self.ctx.marker)})
            proc = subprocess.Popen(
                [cfg.python, "-I", RUNNER_PATH, code_path, str(rep_w)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(rep_w,),
                cwd=workdir,
                env=env,
                preexec_fn=confine,  # the release's design: rlimits are set in the child before exec
                start_new_session=True,
            )
            os.close(rep_w)
            rep_w = -1
            t0 = time.monotonic()
            killed_for, out, err = self._communicate(proc, stdin.encode("utf-8", "surrogatepass"), t0 + timeout_s)
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the group; what escaped with setsid survives (release design)
            except OSError:
                pass
            _, wait_status, ru = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(wait_status)
            os.set_blocking(rep_r, False)
            try:
                report = os.read(rep_r, 64).decode("utf-8", "replace")
            except BlockingIOError:
                report = ""
            ev = _status.Evidence(wait_status, killed_for, ru.ru_utime + ru.ru_stime, float(cpu), report=report)
            status, detail = _status.classify(ev)
            cap = cfg.max_output_bytes
            exit_code = _status.exit_code(wait_status)
            reply = _status.result(-1, status, detail, exit_code, out[:cap], err[:cap], time.monotonic() - t0)
            return to_result(reply)
        except OSError as e:
            return sandbox_error(f"subprocess backend failed: {e!r}")
        finally:
            os.close(rep_r)
            if rep_w >= 0:
                os.close(rep_w)
            remove_tree(workdir)

    def _communicate(self, proc: subprocess.Popen, stdin: bytes, deadline: float) -> tuple[str | None, bytes, bytes]:
        """Feeds stdin, collects stdout/stderr up to the cap; (killed_for, stdout, stderr)."""
        try:
            proc.stdin.write(stdin)
        except BrokenPipeError:
            pass
        proc.stdin.close()
        sel = selectors.DefaultSelector()
        out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
        bufs = {out_fd: bytearray(), err_fd: bytearray()}
        for f in (proc.stdout, proc.stderr):
            sel.register(f, selectors.EVENT_READ)
        killed_for = None
        open_count = 2
        while open_count and killed_for is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                killed_for = "timeout"
                break
            for key, _ in sel.select(remaining):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    open_count -= 1
                    continue
                bufs[key.fd] += chunk
                if len(bufs[key.fd]) > self.cfg.max_output_bytes:
                    killed_for = "output_limit"
        sel.close()
        proc.stdout.close()
        proc.stderr.close()
        return killed_for, bytes(bufs[out_fd]), bytes(bufs[err_fd])
