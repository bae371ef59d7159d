"""docs/install-gpu.md's install leaves an existing GPU stack alone; ``-c constraints.txt`` would not.

A fresh virtual environment stands in for a GPU user's: torch 2.4.1+cu121 (not the 2.13.0 that constraints.txt
pins), vLLM pinned to that torch, verl 0.9.1 requiring torch and ray (as its dependencies do), ray 2.48.0. They are
metadata-only stand-ins written into site-packages (a real second torch is gigabytes), and every dependency of the
plugin is a stand-in wheel in a local wheelhouse, at the version constraints.txt pins, next to torch 2.13.0 and ray
2.60.0 so that the old way *can* replace them. pip runs offline against that wheelhouse; the plugin is built from
this checkout (editable, without build isolation: the venv borrows this venv's pip and setuptools).

The documented lines are read from docs/install-gpu.md (between the ``install-gpu`` markers) and run as written.
"""

from __future__ import annotations

import configparser
import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "install-gpu.md"

#: the GPU user's stack: name -> (version, Requires-Dist)
GPU_STACK: dict[str, tuple[str, list[str]]] = {
    "torch": ("2.4.1+cu121", []),
    "vllm": ("0.6.3", ["torch==2.4.1"]),
    "verl": ("0.9.1", ["torch", "ray>=2.41.0"]),
    "ray": ("2.48.0", []),
}
PROTECTED = ("torch", "vllm", "verl", "ray")


def documented_lines() -> str:
    text = DOC.read_text()
    block = re.search(r"<!-- install-gpu:begin -->\s*```bash\n(.*?)```\s*<!-- install-gpu:end -->", text, re.DOTALL)
    assert block, f"{DOC} lost its install-gpu block"
    return block.group(1)


# ------------------------------------------------------------------------------------------------- stand-ins
def _metadata(name: str, version: str, requires: list[str]) -> str:
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    return "\n".join(lines + [f"Requires-Dist: {r}" for r in requires]) + "\n"


def _files(name: str, version: str, requires: list[str]) -> dict[str, str]:
    module = canonicalize_name(name).replace("-", "_")
    info = f"{module}-{version}.dist-info"
    return {
        f"{module}/__init__.py": f"__version__ = {version!r}  # stand-in\n",
        f"{info}/METADATA": _metadata(name, version, requires),
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: grporoc-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }


def _record(files: dict[str, str], info: str) -> str:
    rows = []
    for path, content in files.items():
        digest = hashlib.sha256(content.encode()).digest()
        import base64

        rows.append(f"{path},sha256={base64.urlsafe_b64encode(digest).rstrip(b'=').decode()},{len(content.encode())}")
    return "\n".join([*rows, f"{info}/RECORD,,"]) + "\n"


def build_wheel(wheelhouse: Path, name: str, version: str, requires: list[str] = ()) -> Path:
    files = _files(name, version, list(requires))
    module = canonicalize_name(name).replace("-", "_")
    info = f"{module}-{version}.dist-info"
    files[f"{info}/RECORD"] = _record(files, info)
    path = wheelhouse / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for arc, content in files.items():
            zf.writestr(arc, content)
    return path


def install_stand_in(site: Path, name: str, version: str, requires: list[str]) -> None:
    """What pip leaves behind after installing a wheel, without pip."""
    files = _files(name, version, requires)
    module = canonicalize_name(name).replace("-", "_")
    info = f"{module}-{version}.dist-info"
    files[f"{info}/INSTALLER"] = "pip\n"
    files[f"{info}/RECORD"] = _record(files, info)
    for rel, content in files.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_text(content)


def plugin_requirements() -> list[Requirement]:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    lines = [ln.split("#")[0].strip() for ln in cfg["options"]["install_requires"].splitlines()]
    return [Requirement(ln) for ln in lines if ln]


def pinned_versions() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version.strip()
    return pins


# ------------------------------------------------------------------------------------------------------ venv
@pytest.fixture
def gpu_env(tmp_path):
    """(python, env vars for pip, site-packages) of a fresh venv holding the stand-in GPU stack."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    # pip and setuptools borrowed from this venv (pure Python; symlinks cost nothing and need no index). Located,
    # not imported: importing setuptools here would trip its distutils hack in the test process.
    host_site = Path(importlib.util.find_spec("setuptools").origin).parents[1]
    for name in ("pip", "setuptools", "_distutils_hack", "pkg_resources"):
        (site / name).symlink_to(host_site / name)
        for dist in host_site.glob(f"{name}-*.dist-info"):
            (site / dist.name).symlink_to(dist)
    for name, (version, requires) in GPU_STACK.items():
        install_stand_in(site, name, version, requires)

    wheelhouse = tmp_path / "wheelhouse"
    wheelhouse.mkdir()
    pins = pinned_versions()
    for req in plugin_requirements():
        name = canonicalize_name(req.name)
        if name != "verl":
            build_wheel(wheelhouse, req.name, pins.get(name, "1.0.0"))
    build_wheel(wheelhouse, "verl", "0.9.1", GPU_STACK["verl"][1])
    build_wheel(wheelhouse, "torch", pins["torch"])  # what constraints.txt would install instead
    build_wheel(wheelhouse, "ray", pins["ray"])

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(
        PATH=f"{venv / 'bin'}:{env.get('PATH', '')}",
        VIRTUAL_ENV=str(venv),
        PIP_NO_INDEX="1",
        PIP_FIND_LINKS=str(wheelhouse),
        PIP_NO_BUILD_ISOLATION="0",  # sic: pip reads this variable as --no-build-isolation
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_NO_CACHE_DIR="1",
        PIP_NO_WARN_SCRIPT_LOCATION="1",
    )
    return python, env, site


def snapshot(python: Path, env: dict, site: Path) -> dict[str, tuple[str, str]]:
    """name -> (installed version, sha256 of its RECORD) for the protected packages."""
    versions = {
        canonicalize_name(d["name"]): d["version"] for d in json.loads(pip(python, env, "list", "--format=json"))
    }
    state = {}
    for name in PROTECTED:
        record = next(site.glob(f"{name}-*.dist-info/RECORD"), None)
        state[name] = (versions.get(name, "missing"), hashlib.sha256(record.read_bytes()).hexdigest() if record else "")
    return state


def pip(python: Path, env: dict, *args: str) -> str:
    """Run pip in the venv (from the repo root); its stdout, or a failure showing everything pip said."""
    done = subprocess.run([str(python), "-m", "pip", *args], env=env, cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, f"pip {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def would_change(python: Path, env: dict, tmp_path: Path, install_args: list[str]) -> dict[str, str]:
    """Protected packages pip would (re)install for ``pip install <install_args>``: name -> version."""
    report = tmp_path / "report.json"
    pip(python, env, "install", "--dry-run", "--quiet", "--report", str(report), *install_args)
    installs = json.loads(report.read_text())["install"]
    changed = {canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"] for i in installs}
    return {name: version for name, version in changed.items() if name in PROTECTED}


def assert_untouched(before: dict, after: dict) -> None:
    changed = {name: (before[name], after[name]) for name in PROTECTED if before[name] != after[name]}
    assert not changed, f"the install changed the GPU stack: {changed}"


# ----------------------------------------------------------------------------------------------------- tests
def test_documented_gpu_install_leaves_the_stack_untouched(gpu_env):
    python, env, site = gpu_env
    before = snapshot(python, env, site)
    assert before["torch"][0] == "2.4.1+cu121" and before["ray"][0] == "2.48.0"
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", documented_lines()], env=env, cwd=REPO, text=True, capture_output=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert_untouched(before, snapshot(python, env, site))
    installed = {canonicalize_name(d["name"]) for d in json.loads(pip(python, env, "list", "--format=json"))}
    assert "grporoc-plugin" in installed  # and the plugin's missing dependencies came along
    assert {canonicalize_name(r.name) for r in plugin_requirements()} <= installed


def test_constraints_txt_would_replace_torch_and_ray(gpu_env, tmp_path):
    """The check above can fail: the README's old way, -c constraints.txt, replaces the GPU user's torch and ray."""
    python, env, site = gpu_env
    changes = would_change(python, env, tmp_path, ["-c", "constraints.txt", "-e", "."])
    pins = pinned_versions()
    assert changes == {"torch": pins["torch"], "ray": pins["ray"]}
    before = snapshot(python, env, site)
    pip(python, env, "install", "--quiet", "-c", "constraints.txt", "-e", ".")
    with pytest.raises(AssertionError, match="changed the GPU stack"):
        assert_untouched(before, snapshot(python, env, site))
