"""The SandboxFusion backend: each run is an HTTP call to a remote ``/run_code`` service (through verl's
``call_sandbox_api``), which executes the runner plus the snippet; isolation is the service's."""

from __future__ import annotations

import base64
import concurrent.futures
import math
import time

from grporoc_plugin.sandbox.backends.base import PoolContext, register_backend, sandbox_error, to_result
from grporoc_plugin.sandbox.config import ExecutionResult, SandboxConfig
from grporoc_plugin.sandbox.server import _runner, _status


def remote_script(code: str) -> str:
    """A self-contained script with the release semantics for a remote executor (the runner plus the snippet)."""
    with open(_runner.__file__, encoding="utf-8") as f:
        src = f.read()
    src = src.split('\nif __name__ == "__main__":')[0]
    blob = base64.b64encode(code.encode("utf-8", "surrogatepass")).decode()
    return (
        f"{src}\n\nimport base64 as _b64\n_rc = run_snippet(_b64.b64decode({blob!r}).decode('utf-8', "
        "'surrogatepass'))\nflush_std()\nos._exit(_rc)\n"
    )


@register_backend("sandbox_fusion")
class SandboxFusionBackend:
    isolation = "remote"
    features: frozenset[str] = frozenset()

    def __init__(self, cfg: SandboxConfig, ctx: PoolContext):
        self.cfg = cfg
        self.notes: list[str] = ["isolation is the remote SandboxFusion service's"]
        self._threads = concurrent.futures.ThreadPoolExecutor(
            cfg.sandbox_fusion_max_concurrency, thread_name_prefix="grporoc-sandbox-remote"
        )

    def submit(self, code: str, stdin: str, timeout_s: float, memory_mb: int) -> concurrent.futures.Future:
        return self._threads.submit(self._run, code, stdin, timeout_s, memory_mb)

    def stats(self) -> dict:
        return {"active": 0, "queued": 0, "workdirs": 0}

    def close(self) -> None:
        self._threads.shutdown(wait=True)

    def _run(self, code: str, stdin: str, timeout_s: float, memory_mb: int) -> ExecutionResult:
        from verl.utils.reward_score.sandbox_fusion.utils import call_sandbox_api

        t0 = time.monotonic()
        resp, err = call_sandbox_api(
            self.cfg.sandbox_fusion_url,
            remote_script(code),
            stdin,
            compile_timeout=10,
            run_timeout=max(1, int(math.ceil(timeout_s))),
            memory_limit_mb=memory_mb,
        )
        if resp is None or not isinstance(resp, dict):
            return sandbox_error(f"SandboxFusion call failed: {err}")
        run = resp.get("run_result") or {}
        if resp.get("status") == "SandboxError" or not isinstance(run, dict):
            return sandbox_error(f"SandboxFusion error: status={resp.get('status')!r} message={resp.get('message')!r}")
        if run.get("status") not in ("Finished", "TimeLimitExceeded"):
            return sandbox_error(f"SandboxFusion error: run status={run.get('status')!r}")
        stdout, stderr = str(run.get("stdout") or ""), str(run.get("stderr") or "")
        rc = run.get("return_code")
        cap = self.cfg.max_output_bytes
        over = len(stdout.encode()) > cap or len(stderr.encode()) > cap
        killed_for = "timeout" if run["status"] == "TimeLimitExceeded" else ("output_limit" if over else None)
        # The service reports an exit code, not a wait status: rebuild one (signal deaths come as 128+N or -N).
        wait_status = None
        if isinstance(rc, int):
            sig = -rc if rc < 0 else (rc - 128 if rc > 128 else 0)
            wait_status = sig if sig else (rc & 0xFF) << 8
        report = "MemoryError" if stderr.startswith("MemoryError") else ""
        ev = _status.Evidence(wait_status=wait_status, killed_for=killed_for, report=report)
        if ev.wait_status is None and killed_for is None:
            return sandbox_error(f"SandboxFusion returned no exit code: {run!r}"[:500])
        status, detail = _status.classify(ev)
        duration = float(run.get("execution_time") or (time.monotonic() - t0))
        reply = _status.result(-1, status, detail, rc, stdout[:cap], stderr[:cap], duration)
        return to_result(reply)
