"""Registration happens through verl's ``verl.plugins`` entry point, in a fresh interpreter, and fails loudly.

Each test starts a real subprocess of the project's venv python: ``import verl`` there must load our entry point
(the package is pip-installed editable with ``verl.plugins: grporoc = grporoc_plugin.register``) exactly as every
trainer / Ray worker process does.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
PYTHON = str(VENV_PYTHON if VENV_PYTHON.exists() else Path(sys.executable))

PROBE = textwrap.dedent(
    """
    import sys
    import verl
    from verl.trainer.ppo.core_algos import ADV_ESTIMATOR_REGISTRY
    print("REGISTERED" if "grpo_roc" in ADV_ESTIMATOR_REGISTRY else "NOT_REGISTERED")
    print("FROM_" + getattr(ADV_ESTIMATOR_REGISTRY.get("grpo_roc"), "__module__", "nowhere"))
    print("PLUGIN_IMPORTED" if "grporoc_plugin.register" in sys.modules else "PLUGIN_NOT_IMPORTED")
    """
)


def _run(args: list[str], env_update: dict[str, str] | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VERL_USE_EXTERNAL")}
    env.update(env_update or {})
    # run from a neutral directory so the repo is found through the installed distribution, not the cwd
    return subprocess.run(
        [PYTHON, *args], cwd="/", env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_entry_point_registers_grpo_roc_on_import_verl():
    """Positive control for the doctor test below: nothing blocked -> registered by ``import verl`` alone."""
    proc = _run(["-c", PROBE])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "REGISTERED" in proc.stdout.split() and "PLUGIN_IMPORTED" in proc.stdout.split(), proc.stdout
    assert "FROM_grporoc_plugin.algos" in proc.stdout.split(), proc.stdout


def test_disabling_external_plugins_disables_registration():
    """VERL_USE_EXTERNAL_PLUGINS=none turns it off: the entry point is the mechanism, not some other import."""
    proc = _run(["-c", PROBE], {"VERL_USE_EXTERNAL_PLUGINS": "none"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "NOT_REGISTERED" in proc.stdout.split() and "PLUGIN_NOT_IMPORTED" in proc.stdout.split(), proc.stdout


def _doctor_line(stdout: str, needle: str) -> str:
    lines = [line for line in stdout.splitlines() if needle in line]
    assert lines, f"no doctor line mentions {needle!r}:\n{stdout}"
    return lines[0]


@pytest.mark.parametrize("blocked", ["grporoc_plugin.algos"])
def test_doctor_fails_loudly_when_a_component_cannot_be_imported(tmp_path, blocked):
    """A sitecustomize on PYTHONPATH makes importing one component raise ImportError in the doctor's process.

    verl swallows entry-point errors, so without the doctor this plugin would silently vanish.
    """
    (tmp_path / "sitecustomize.py").write_text(
        f"import sys\nsys.modules[{blocked!r}] = None  # any import of it now raises ImportError\n"
    )
    proc = _run(["-m", "grporoc_plugin", "doctor"], {"PYTHONPATH": str(tmp_path)})
    assert proc.returncode != 0, proc.stdout
    assert _doctor_line(proc.stdout, "advantage estimator 'grpo_roc'").startswith("[MISSING]"), proc.stdout
    assert f"[ERROR] import of {blocked} failed" in proc.stdout, proc.stdout


def test_import_verl_loads_nothing_heavy_from_the_plugin():
    """Issue 10.6: the entry point runs in every verl process; components load when verl opens their registry."""
    code = "import sys, verl; print(' '.join(sorted(m for m in sys.modules if m.startswith('grporoc_plugin'))))"
    proc = _run(["-c", code])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["grporoc_plugin", "grporoc_plugin.register"]
    # ... and a registry is complete the moment verl opens it
    code = (
        "import verl; from verl.experimental.agent_loop.agent_loop import _agent_loop_registry as r;"
        "from verl.experimental.reward_loop.reward_manager import get_reward_manager_cls as g;"
        "print('grporoc_tool_agent' in r, g('grporoc').__module__)"
    )
    proc = _run(["-c", code])
    assert proc.stdout.split() == ["True", "grporoc_plugin.reward.manager"], proc.stdout + proc.stderr[-3000:]


@pytest.mark.parametrize(
    "first", ["grporoc_plugin.tools.parser", "grporoc_plugin.reward.manager", "grporoc_plugin.v1.sampler"]
)
def test_every_import_order_registers_everything(first):
    """A plugin module imported before verl's registry must not break the post-import hooks (no cycle errors)."""
    code = (
        f"import {first}, verl, verl.experimental.reward_loop, verl.trainer.ppo.core_algos as ca;"
        "from grporoc_plugin import compat; from grporoc_plugin.register import REGISTRATION_ERRORS as E;"
        "from verl.experimental.reward_loop.reward_manager import get_reward_manager_cls as g;"
        "print(E == {}, 'grporoc_tool_agent' in compat.registered_agent_loops(),"
        "'grporoc_hermes' in compat.registered_tool_parsers(), g('grporoc').__name__,"
        "'grpo_roc' in ca.ADV_ESTIMATOR_REGISTRY)"
    )
    proc = _run(["-c", code])
    assert proc.stdout.split() == ["True", "True", "True", "GrpoRocRewardManager", "True"], (
        proc.stdout + proc.stderr[-3000:]
    )
