"""Sandbox semantics, isolation and the hostile corpus, for every isolation mode available here."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from hostile_corpus import CASES
from sandbox_helpers import MODES, assert_contained, cgroup_busy, server_tree, snippet_processes

from grporoc_plugin.sandbox import (
    STATUSES,
    ExecutionResult,
    SandboxConfig,
    SandboxConfigError,
    SandboxPool,
    SandboxUnavailableError,
    aexecute,
    execute,
)
from grporoc_plugin.sandbox.cgroups import pool_resources
from grporoc_plugin.sandbox.pool import layout_of

# ---------------------------------------------------------------------------------------------------------------------
# Release semantics
# ---------------------------------------------------------------------------------------------------------------------


def test_last_expression_repr_and_stdin(pool):
    r = pool.execute("import sys\ndata = sys.stdin.read().split()\nsum(map(int, data))", "1 2 3\n")
    assert (r.status, r.stdout, r.stderr, r.exit_code) == ("ok", "6\n", "", 0)
    assert pool.execute("x = 'a'\nx * 2").stdout == "'aa'\n"  # repr, IPython-style
    assert pool.execute("print('p')\nNone").stdout == "p\n"  # None is not printed
    assert pool.execute("").status == "ok"


def test_error_names_type_and_line(pool):
    r = pool.execute("a = 1\nb = 2\nprint(x)\n")
    assert r.status == "exec_error" and r.exit_code == 1
    assert r.stderr == "NameError at line 3: name 'x' is not defined\n  print(x)\n"
    r = pool.execute("def f():\n    return 1 / 0\n\nf()")  # error inside a function called by the last expression
    assert r.stderr.startswith("ZeroDivisionError at line 2: division by zero\n  ")
    r = pool.execute("x = (\n")
    assert r.status == "exec_error" and r.stderr.startswith("SyntaxError at line 1")
    assert pool.execute("import sys\nsys.exit(0)").status == "ok"
    assert pool.execute("import sys\nsys.exit(3)").exit_code == 3


def test_environment_is_scrubbed_and_workdir_private(pool, monkeypatch):
    monkeypatch.setenv("GRPOROC_TEST_SECRET", "hunter2")
    r = pool.execute("import os, json\nprint(json.dumps(dict(os.environ)))\nprint(os.getcwd())")
    env_line, cwd = r.stdout.splitlines()
    assert "hunter2" not in r.stdout and "VIRTUAL_ENV" not in env_line
    assert set(eval(env_line)) <= set(pool.config.env) | {"HOME", "TMPDIR", "PWD", "GRPOROC_SANDBOX"}
    assert eval(env_line)["HOME"] == cwd
    # With per-run scratch space the run works in its own tmpfs (/tmp); else in a host directory of its own.
    assert cwd == "/tmp" if "scratch" in pool.features else "run-" in cwd
    r2 = pool.execute("import os\nopen('f.txt', 'w').write('x')\nos.listdir('.')")
    assert r2.stdout == "['f.txt']\n"
    assert pool.execute("import os\nos.listdir('.')").stdout == "[]\n"  # a fresh directory per run


def test_malformed_input_is_an_exec_error_not_a_crash(pool):
    assert pool.execute(None).status == "exec_error"  # type: ignore[arg-type]
    assert pool.execute("print(1)", stdin=5).status == "exec_error"  # type: ignore[arg-type]
    r = pool.execute("x = 1\0")  # a NUL byte in the source is the snippet's error
    assert r.status == "exec_error" and "null" in r.stderr
    assert pool.execute("'\udcff'").status in {"ok", "exec_error"}


def test_limits_are_per_call(pool):
    t0 = time.monotonic()
    r = pool.execute("import time\ntime.sleep(5)", timeout_s=0.3)
    assert r.status == "timeout" and time.monotonic() - t0 < 1.5
    assert pool.execute("x = bytearray(200 << 20)\nlen(x)", memory_mb=1024).status == "ok"
    assert pool.execute("x = bytearray(200 << 20)\nlen(x)", memory_mb=128).status == "memory_error"


async def test_aexecute_concurrent(pool):
    results = await asyncio.gather(*(pool.aexecute(f"{i} * 2") for i in range(16)))
    assert [r.stdout for r in results] == [f"{i * 2}\n" for i in range(16)]


# ---------------------------------------------------------------------------------------------------------------------
# Hostile corpus: bounded, classified, nothing survives, nothing written outside, host unharmed
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def listener():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    yield srv.getsockname()[1]
    srv.close()


REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def secret_files():
    """A secret token in files under the host's HOME, the repository and the host's /tmp (removed afterwards)."""
    token = "grporoc-file-secret-" + os.urandom(6).hex()
    paths = [
        d / f".grporoc-test-secret-{os.urandom(4).hex()}" for d in (Path.home(), REPO, Path(tempfile.gettempdir()))
    ]
    for p in paths:
        p.write_text(token)
        p.chmod(0o644)  # readable by anyone who can reach it: only the mount namespace may hide it
    yield token, [str(p) for p in paths]
    for p in paths:
        p.unlink(missing_ok=True)


def _check_fs_case(pool: SandboxPool, name: str, r: ExecutionResult, token: str) -> None:
    """What the filesystem cases must show beyond their status: nothing of the host's private files."""
    assert token not in r.stdout + r.stderr + r.detail, (name, r)
    if name.startswith("read_") and r.status == "exec_error":
        assert r.stderr.split(" ")[0] in {"FileNotFoundError", "PermissionError"}, r.stderr
    if name == "read_host_secret_files":
        assert "READ" not in r.stdout and r.stdout.count("blocked") == 3, r.stdout
    if name == "list_root_and_home":
        top, root, exists = r.stdout.splitlines()
        binds = [inside for _, inside in layout_of(pool.config)["binds"]]
        assert ".bashrc" not in root and ".grporoc-test-secret" not in root, root
        for hidden in ("'home'", "'opt'", "'run'", "'srv'", "'mnt'", "'sys'", "'boot'"):
            if not any(b.startswith(hidden.strip("'").join("/" * 2)) for b in binds):
                assert hidden not in top, top
        probes = ("/home", "/opt", "/run", "/var/lib", "/sys", "/mnt", "/srv")
        assert exists == str([any(b == p or b.startswith(p + "/") for b in binds) for p in probes]), exists
    if name == "host_pid1_environ":
        cmdline, pids, env = r.stdout.splitlines()
        with open("/proc/1/cmdline", "rb") as f:
            assert cmdline != repr(f.read())  # PID 1 is the run's supervisor, not the host's init
        assert len(eval(pids)) <= 3, pids
        assert env.startswith("blocked") if "uid" in pool.features else os.environ["GRPOROC_SECRET"] not in env


@pytest.mark.parametrize("name,code,statuses,needs", CASES, ids=[c[0] for c in CASES])
def test_hostile(pool, name, code, statuses, needs, listener, monkeypatch, secret_files):
    if not needs <= pool.features:
        # Only the rlimits-only mode may lack a layer (its weaker guarantees are asserted in test_rlimits_only_limits).
        assert pool.isolation.startswith("rlimits-only"), pool.isolation
        pytest.skip(f"{pool.isolation} cannot promise this case (needs {sorted(needs - pool.features)})")
    secret = "grporoc-secret-" + os.urandom(4).hex()
    monkeypatch.setenv("GRPOROC_SECRET", secret)
    os.environ["GRPOROC_SECRET"] = secret
    code = code.replace("{port}", str(listener)).replace("{secret_name}", "GRPOROC_SECRET")
    code = code.replace("{secret_value}", secret)
    token, files = secret_files
    code = code.replace("{secret_files}", repr(files)).replace("{repo_secret!r}", repr(files[1]))
    # The memory bomb faults in its whole RLIMIT_AS page by page: smaller and with time to do so on a loaded machine.
    limits = {"timeout_s": 5.0, "memory_mb": 160} if name == "memory_bomb" else {"timeout_s": 1.5}
    t0 = time.monotonic()
    r = pool.execute(code, **limits)
    elapsed = time.monotonic() - t0
    assert isinstance(r, ExecutionResult) and r.status in STATUSES
    assert r.status in statuses, (r.status, r.stdout[:300], r.stderr[:300], r.detail)
    # Bounded: a PID namespace dies at once; without one the supervisor hunts a racing fork bomb through /proc.
    assert elapsed < limits["timeout_s"] + (4.0 if "pid" in pool.features else 10.0)
    assert_contained(pool)
    for path in (
        Path.home() / "grporoc_pwned",
        Path("/root/grporoc_pwned"),
        Path("/tmp/grporoc_pwned"),
        Path("/work/grporoc_pwned"),
    ):
        assert not os.path.exists(path), f"{name} wrote {path}"  # (False where we may not look: nor could it write)
    _check_fs_case(pool, name, r, token)
    if name == "read_host_environment":
        assert r.stdout.startswith("clean"), r.stdout
    if name == "binary_output":
        assert len(r.stdout) == 1024 and "\ufffd" in r.stdout
    if name == "huge_output":
        assert len(r.stdout) == pool.config.max_output_bytes
    # the host and the pool are unharmed
    assert os.getpid() and pool.execute("1 + 1").stdout == "2\n"


def test_snippet_sees_interpreter_and_site_packages_only(pool):
    """Mount modes: stdlib and site-packages importable (numpy, sympy), the repository not, snippets unprivileged."""
    if "mount" not in pool.features:
        assert pool.isolation.startswith("rlimits-only")
        pytest.skip("rlimits-only: no filesystem isolation to check")
    r = pool.execute("import numpy, sympy, json\nprint(int(numpy.arange(4).sum()), sympy.Integer(6) / 4)")
    assert (r.status, r.stdout) == ("ok", "6 3/2\n"), r
    r = pool.execute("import grporoc_plugin")  # installed editable from the repo, which the sandbox does not show
    assert r.status == "exec_error" and r.stderr.startswith("ModuleNotFoundError"), r
    r = pool.execute(
        "import os\nos.getuid(), os.getgid(), os.path.exists(os.path.join(" + repr(str(REPO)) + ", 'grporoc_plugin'))"
    )
    assert r.stdout == ("(65534, 65534, False)\n" if "uid" in pool.features else "(0, 0, False)\n"), r


@pytest.mark.parametrize("mode", [m for m in MODES if m != "none"])
def test_filesystem_exposure_is_configurable(mode):
    """extra_ro_paths shows a directory (even inside the hidden HOME) read-only; site-packages can be withheld."""
    outer = Path.home() / f".grporoc-test-extra-{os.urandom(4).hex()}"
    shared = outer / "shared"
    shared.mkdir(parents=True)
    (outer / "private.txt").write_text("private")
    (shared / "data.txt").write_text("visible")
    try:
        cfg = SandboxConfig(isolation=mode, expose_site_packages=False, extra_ro_paths=[str(shared)], max_concurrency=2)
        with SandboxPool(cfg) as p:
            assert p.execute("import json, decimal\n1").status == "ok"  # the stdlib is always there
            assert p.execute("import numpy").stderr.startswith("ModuleNotFoundError")
            r = p.execute(f"print(open({str(shared / 'data.txt')!r}).read())\nopen({str(shared / 'new')!r}, 'w')")
            assert r.stdout == "visible\n" and r.status == "exec_error", r  # readable, not writable
            assert p.execute(f"import os\nos.listdir({str(outer)!r})").stdout == "['shared']\n"
    finally:
        shutil.rmtree(outer)
    for bad in (["relative/path"], ["/tmp"], [str(Path(tempfile.gettempdir()) / "x")], ["/nonexistent-grporoc"]):
        with pytest.raises(SandboxConfigError, match="extra_ro_paths"):
            SandboxConfig(extra_ro_paths=bad)
    with pytest.raises(SandboxConfigError, match="run_uid"):
        SandboxConfig(run_uid=-5)


def test_rlimits_only_limits(secret_files):
    """rlimits-only mode: bounded and contained, but no network/filesystem/PID isolation, and it says so."""
    token, files = secret_files
    with SandboxPool(SandboxConfig(isolation="none")) as p:
        assert p.isolation.startswith("rlimits-only")
        assert not {"net", "mount", "pid"} & p.features
        # No filesystem isolation: the host's files are readable (documented; use namespaces/bwrap for untrusted code).
        assert p.execute(f"print(open({files[0]!r}).read())").stdout == token + "\n"
        r = p.execute("import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\nprint('x')")
        assert r.status == "ok" and snippet_processes(p) == []
    for need in ("network", "pid", "filesystem", "full"):
        with pytest.raises(SandboxUnavailableError, match="require_isolation"):
            SandboxPool(SandboxConfig(isolation="none", require_isolation=need))


def test_burst_1000_at_concurrency_8():
    """1000 calls at concurrency 8 (8 slots): all right, nothing left, the pool's directory gone after close."""

    async def burst(p: SandboxPool) -> list[ExecutionResult]:
        sem = asyncio.Semaphore(8)

        async def one(i: int) -> ExecutionResult:
            async with sem:
                return await p.aexecute(f"{i} + 1")

        return await asyncio.gather(*(one(i) for i in range(1000)))

    with SandboxPool(SandboxConfig(max_concurrency=8)) as p:
        p.idle_tree = server_tree(p)
        t0 = time.monotonic()
        results = asyncio.run(burst(p))
        elapsed = time.monotonic() - t0
        assert [r.stdout for r in results] == [f"{i + 1}\n" for i in range(1000)]
        assert_contained(p)
        base = p._base
    assert not os.path.exists(base)  # the pool's host directory is gone after close
    print(f"1000-call burst: {elapsed:.1f}s ({1000 / elapsed:.0f}/s)")


# ---------------------------------------------------------------------------------------------------------------------
# Isolation detection, configuration, default pool, server death
# ---------------------------------------------------------------------------------------------------------------------


def test_expected_isolation_modes():
    expected = [m for m in os.environ.get("GRPOROC_SANDBOX_EXPECT", "").split(",") if m]
    missing = [m for m in expected if m not in MODES]
    assert not missing, f"isolation modes expected by GRPOROC_SANDBOX_EXPECT but unavailable: {missing}"
    layers = {f for f in os.environ.get("GRPOROC_SANDBOX_EXPECT_LAYERS", "").split(",") if f}
    with SandboxPool(SandboxConfig(isolation=MODES[0], max_concurrency=1)) as p:
        assert layers <= p.features, (
            f"layers expected by GRPOROC_SANDBOX_EXPECT_LAYERS but missing: {sorted(layers - p.features)} "
            f"({p.isolation}; {p.notes})"
        )
        print("sandbox isolation modes tested:", MODES, "strongest:", p.isolation)


def test_auto_picks_strongest_and_require_is_enforced():
    with SandboxPool() as p:
        if "namespaces" in MODES:
            assert "bwrap" not in p.isolation and {"net", "mount", "pid"} <= p.features, p.isolation
        elif "bwrap" in MODES:
            assert p.isolation.startswith("bwrap")
        full = {"net", "pid", "mount", "runnet", "ipc", "seccomp"} <= p.features
    if full:
        with SandboxPool(SandboxConfig(require_isolation="full")) as p:
            assert {"net", "pid", "mount"} <= p.features
    else:
        with pytest.raises(SandboxUnavailableError, match="require_isolation"):
            SandboxPool(SandboxConfig(require_isolation="full"))


def test_bad_config_names_key():
    with pytest.raises(SandboxConfigError, match="isolation"):
        SandboxConfig(isolation="docker")
    with pytest.raises(SandboxConfigError, match="timeout_s"):
        SandboxConfig(timeout_s=0)
    with pytest.raises(SandboxConfigError, match="sandbox_fusion_url"):
        SandboxConfig(backend="sandbox_fusion")
    with pytest.raises(SandboxConfigError, match="disable_layers"):
        SandboxConfig(disable_layers=("seccomp", "network"))


def test_default_pool_functions():
    assert execute("40 + 2").stdout == "42\n"
    assert asyncio.run(aexecute("print('a')")).stdout == "a\n"
    assert execute("while True: pass", timeout_s=0.2).status == "timeout"


def test_server_death_gives_sandbox_error_then_recovers(caplog):
    with SandboxPool(SandboxConfig(isolation=MODES[0], max_concurrency=2)) as p:
        fut = p._submit("import time\ntime.sleep(5)", "", 5.0, 256)
        time.sleep(0.2)
        os.kill(p.server_pid, 9)
        assert fut.result(timeout=10).status == "sandbox_error"
        r = p.execute("1")
        assert r.status == "ok"  # restarted
        assert "sandbox fork server died (killed by signal 9); restarting it" in caplog.text
        p.idle_tree = server_tree(p)
        assert_contained(p)  # nothing of the old server's runs is left


def test_subprocess_backend_same_semantics():
    with SandboxPool(SandboxConfig(backend="subprocess")) as p:
        assert p.execute("x = 3\nx * 2").stdout == "6\n"
        r = p.execute("print(y)")
        assert r.status == "exec_error" and r.stderr.startswith("NameError at line 1")
        assert p.execute("while True: pass", timeout_s=0.5).status == "timeout"
        assert p.execute("x = bytearray(500 << 20)", memory_mb=256).status == "memory_error"
        assert p.execute("print('A' * 3000000)").status == "output_limit"
        assert p.execute("import os, signal\nos.kill(os.getpid(), signal.SIGXCPU)").status == "exec_error"
        assert p.execute("print(input())", "\ud800").status == "ok"  # a lone surrogate is not the sandbox's error


def test_import_is_light():
    code = "import sys, grporoc_plugin.sandbox\nprint('ray' in sys.modules, 'verl' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


def test_killed_host_leftovers_are_swept():
    """A host killed without closing its pool (os._exit here, SIGKILL or ray.kill elsewhere) leaves its cgroup and temp
    dir; the next pool created on the machine removes them (its server died with the host by parent-death signal)."""
    code = (
        "import os\nfrom grporoc_plugin.sandbox import SandboxPool\np = SandboxPool()\n"
        "assert p.execute('1').status == 'ok'\n"
        "cg = p._backend.cgroups\nprint(p.marker, p._base, *(cg.paths if cg else []), flush=True)\nos._exit(0)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    marker, base, *cgroups = out.stdout.split()
    assert os.path.isdir(base) and all(os.path.isdir(c) for c in cgroups)  # really left behind
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(cgroup_busy(c) or cgroup_busy(os.path.join(c, "slot-0"))
                                              for c in cgroups):  # fmt: skip
        time.sleep(0.02)  # its server is still dying from the parent-death signal
    with SandboxPool(SandboxConfig(isolation="none", max_concurrency=1)):
        pass
    assert not os.path.exists(base) and not any(os.path.exists(c) for c in cgroups), marker


# ---------------------------------------------------------------------------------------------------------------------
# Interpreter or checkout inside a scratch directory (CI may clone under /tmp)
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scratch_venv():
    """A venv under /tmp (hidden by the sandbox's own /tmp) with a tiny module in its site-packages, plus a secret."""
    root = Path(tempfile.mkdtemp(prefix="grporoc-test-scratch-venv-", dir="/tmp"))
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], check=True, timeout=120)
    python = str(root / "venv" / "bin" / "python")
    probe = "import site; print(site.getsitepackages()[0])"
    site_dir = subprocess.run([python, "-I", "-c", probe], capture_output=True, text=True, check=True).stdout.strip()
    assert site_dir.startswith(str(root))
    (Path(site_dir) / "grporoc_scratch_probe.py").write_text("VALUE = 42\n")
    (root / "secret.txt").write_text("scratch-secret")
    yield python, root
    shutil.rmtree(root)


@pytest.mark.parametrize("mode", MODES)
def test_interpreter_in_a_scratch_dir(mode, scratch_venv):
    """A venv under /tmp: the pool starts in every mode and snippets import from its site-packages (also in a
    subprocess of sys.executable); the mount modes still show nothing else of the host's /tmp."""
    python, root = scratch_venv
    with SandboxPool(SandboxConfig(python=python, isolation=mode, max_concurrency=2)) as p:
        if mode != "none":
            assert {"mount", "pid"} <= p.features, p.isolation
        r = p.execute("import grporoc_scratch_probe\ngrporoc_scratch_probe.VALUE")
        assert (r.status, r.stdout) == ("ok", "42\n"), r
        r = p.execute(
            "import subprocess, sys\n"
            "child = 'import grporoc_scratch_probe as m; print(m.VALUE)'\n"
            "_ = subprocess.run([sys.executable, '-c', child], check=True)"
        )
        assert (r.status, r.stdout) == ("ok", "42\n"), r
        secret = str(root / "secret.txt")
        r = p.execute(f"import os\nprint(os.listdir('/tmp'), os.path.exists({secret!r}))")
        if mode == "none":
            assert r.stdout.endswith(" True\n"), r  # no filesystem isolation (documented)
        else:
            assert r.stdout == "[] False\n", r
            r = p.execute(
                "import glob\n"
                "print([p for p in glob.glob('/.grporoc-host/**', recursive=True) if p.endswith('secret.txt')])\n"
                "try:\n    open(glob.glob('/.grporoc-host/tmp/*/venv/pyvenv.cfg')[0], 'a')\n"
                "except OSError as e:\n    print('blocked', type(e).__name__)"
            )
            assert r.stdout in ("[]\nblocked OSError\n", "[]\nblocked PermissionError\n"), r  # only the venv, r/o


@pytest.mark.parametrize("mode", [m for m in MODES if m != "none"])
def test_failed_start_leaves_nothing(mode):
    """A fork server that dies while starting (here: a preload that does not exist) is an error naming the mode, and
    its pool leaves no process, cgroup or temp dir behind."""
    mine = f"pool-{os.getpid()}-"

    def resources() -> set[str]:
        return {path for path in pool_resources() if mine in os.path.basename(path)}

    before = resources()
    with pytest.raises(SandboxUnavailableError, match=f"fork server \\({mode}\\) failed to start"):
        SandboxPool(SandboxConfig(isolation=mode, preload=("grporoc_no_such_module",)))
    assert resources() == before
