"""SandboxFusion backend (through verl's ``call_sandbox_api``) against a local stub speaking /run_code JSON, and the
Ray actor pool on a local Ray cluster."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from grporoc_plugin.sandbox import SandboxConfig, SandboxPool


class _StubSandboxFusion(BaseHTTPRequestHandler):
    """Executes the posted script with a local python, answering in SandboxFusion's run_code response format."""

    requests: list[dict] = []

    def do_POST(self):  # noqa: N802 - http.server API
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(req)
        if req["stdin"] == "#sandbox-down":
            body = {"status": "SandboxError", "message": "runner crashed", "run_result": None}
        else:
            try:
                proc = subprocess.run([sys.executable, "-I", "-c", req["code"]], input=req["stdin"] or "",
                                      capture_output=True, text=True, timeout=req["run_timeout"])  # fmt: skip
                run = {"status": "Finished", "execution_time": 0.01, "return_code": proc.returncode,
                       "stdout": proc.stdout, "stderr": proc.stderr}  # fmt: skip
            except subprocess.TimeoutExpired:
                run = {"status": "TimeLimitExceeded", "execution_time": req["run_timeout"], "return_code": None,
                       "stdout": "", "stderr": ""}  # fmt: skip
            body = {"status": "Success" if run["return_code"] == 0 else "Failed", "message": "",
                    "compile_result": None, "run_result": run, "executor_pod_name": "stub", "files": {}}  # fmt: skip
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def stub_url(monkeypatch_module=None):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StubSandboxFusion)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/run_code"
    server.shutdown()
    server.server_close()


async def test_sandbox_fusion_backend(stub_url, monkeypatch):
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    with SandboxPool(SandboxConfig(backend="sandbox_fusion", sandbox_fusion_url=stub_url, timeout_s=2)) as p:
        assert p.isolation == "remote"
        r = p.execute("import sys\nn = int(sys.stdin.read())\nn * 2", "21")
        assert (r.status, r.stdout, r.exit_code) == ("ok", "42\n", 0)
        sent = _StubSandboxFusion.requests[-1]
        assert sent["stdin"] == "21" and sent["language"] == "python" and sent["memory_limit_MB"] == 384
        r = await p.aexecute("a = 1\nprint(b)")
        assert r.status == "exec_error" and r.stderr.startswith("NameError at line 2: name 'b' is not defined")
        assert p.execute("while True: pass", timeout_s=1).status == "timeout"
        assert p.execute("x = bytearray(1 << 40)").status == "memory_error"
        r = p.execute("1", "#sandbox-down")
        assert r.status == "sandbox_error" and "runner crashed" in r.detail
    with SandboxPool(SandboxConfig(backend="sandbox_fusion", sandbox_fusion_url="http://127.0.0.1:9/run_code")) as p:
        r = p.execute("1")  # nothing listens there: an infrastructure error, not the snippet's
        assert r.status == "sandbox_error" and "SandboxFusion call failed" in r.detail


@pytest.mark.slow
def test_ray_sandbox_pool_local_cluster():
    import ray

    from grporoc_plugin.sandbox import RaySandboxPool

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        with RaySandboxPool(SandboxConfig(max_concurrency=4), num_actors=2, num_cpus_per_actor=1) as pool:
            assert len({i["pid"] for i in pool.actor_info}) == 2
            assert pool.isolation == pool.actor_info[0]["isolation"]
            calls = [{"code": f"import os\nprint({i} * 3)", "stdin": ""} for i in range(40)]
            import asyncio

            results = asyncio.run(pool.amap(calls))
            assert [r.stdout for r in results] == [f"{i * 3}\n" for i in range(40)]
            assert pool.execute("while True: pass", timeout_s=0.3).status == "timeout"
            assert all(s["active"] == 0 and s["workdirs"] == 0 for s in pool.stats())
            # a killed actor is restarted by Ray: a call that reaches it meanwhile is an infrastructure error
            # (sandbox_error, never a model error), later calls run again on both actors
            import os
            import signal
            import time

            os.kill(pool.actor_info[0]["pid"], signal.SIGKILL)
            statuses, deadline = [], time.monotonic() + 90
            while time.monotonic() < deadline and statuses[-6:] != ["ok"] * 6:
                statuses.append(pool.execute("print(1)").status)
            assert set(statuses) <= {"ok", "sandbox_error"} and statuses[-6:] == ["ok"] * 6, statuses
            pids = {ray.get(a.info.remote())["pid"] for a in pool.actors}
            assert len(pids) == 2 and pool.actor_info[0]["pid"] not in pids
    finally:
        ray.shutdown()
