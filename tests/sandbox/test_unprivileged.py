"""A host that forbids user namespaces: ``isolation=auto`` falls back and says so (a warning naming why), and
``require_isolation`` fails at start-up naming what is missing and how to get it.

Run here through ``nouserns.py`` (a user namespace of our own whose ``max_user_namespaces`` is 0, without any
capability) when the tests run as root; CI also runs this file as an unprivileged user inside that simulation, with
GRPOROC_SANDBOX_NO_USERNS=1 saying so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

CHECK = r"""
import json, logging, io
from grporoc_plugin.sandbox import SandboxConfig, SandboxPool, SandboxUnavailableError
log = io.StringIO()
logging.basicConfig(stream=log, level=logging.WARNING)
out = {}
with SandboxPool(SandboxConfig(max_concurrency=1)) as p:
    out["isolation"], out["features"] = p.isolation, sorted(p.features)
    r = p.execute("import os\nprint(os.getpid() > 1)")
    out["run"] = [r.status, r.stdout]
out["warning"] = log.getvalue()
for level in ("full", "network"):
    try:
        SandboxPool(SandboxConfig(require_isolation=level, max_concurrency=1)).close()
        out[level] = None
    except SandboxUnavailableError as e:
        out[level] = str(e)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def res() -> dict:
    """CHECK's answer from a fresh interpreter: as is under the CI simulation, else through nouserns.py (root)."""
    cmd = [sys.executable, "-c", CHECK]
    if os.environ.get("GRPOROC_SANDBOX_NO_USERNS") != "1":
        if os.geteuid() != 0:
            pytest.skip("simulating a host without user namespaces needs root (CI runs it as an unprivileged user)")
        cmd = [sys.executable, str(HERE / "nouserns.py"), "--", *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_without_user_namespaces_auto_falls_back_and_says_so(res):
    assert res["isolation"].startswith("rlimits-only"), res
    assert not {"net", "mount", "pid", "runnet", "ipc"} & set(res["features"]), res
    assert res["run"] == ["ok", "True\n"], res  # still runs, with rlimits (and seccomp where libseccomp is)
    warning = res["warning"]
    assert "sandbox isolation=auto fell back to 'none'" in warning, warning
    assert "user namespaces unavailable: user.max_user_namespaces is 0" in warning, warning


@pytest.mark.parametrize("level,missing", [("full", "'mount', 'net', 'pid'"), ("network", "'net'")])
def test_without_user_namespaces_require_isolation_fails_naming_what_and_how(res, level, missing):
    message = res[level]
    assert message is not None, "require_isolation was satisfied on a host without user namespaces"
    assert f"SandboxConfig.require_isolation={level!r}" in message and missing in message, message
    assert "To get them:" in message and "sysctl -w user.max_user_namespaces" in message, message
