"""The upstream patches in patches/ must apply cleanly to the pinned verl and leave valid Python behind."""

from __future__ import annotations

import py_compile
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import verl

REPO = Path(__file__).resolve().parents[1]
PATCHES = sorted((REPO / "patches").glob("*.patch"))
SITE = Path(verl.__file__).resolve().parents[1]  # the directory that contains verl/


def _touched_files(patch: Path) -> list[str]:
    return re.findall(r"^\+\+\+ b/(\S+)", patch.read_text(), flags=re.M)


def test_there_are_patches():
    assert PATCHES, "patches/ is empty"


@pytest.mark.parametrize("patch", PATCHES, ids=lambda p: p.name)
def test_patch_applies_to_pinned_verl(patch: Path, tmp_path: Path):
    files = _touched_files(patch)
    assert files, f"{patch.name} touches no file"
    for rel in files:
        src = SITE / rel
        if src.exists():  # new files are created by the patch itself
            (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, tmp_path / rel)
    proc = subprocess.run(
        ["patch", "-p1", "--forward", "--batch", "-i", str(patch)], cwd=tmp_path, capture_output=True, text=True
    )
    assert proc.returncode == 0, f"{patch.name} does not apply to verl {verl.__version__}:\n{proc.stdout}{proc.stderr}"
    assert "fuzz" not in proc.stdout.lower(), f"{patch.name} applied only with fuzz:\n{proc.stdout}"
    for rel in files:
        if rel.endswith(".py"):
            py_compile.compile(str(tmp_path / rel), doraise=True)
