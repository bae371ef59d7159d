"""Import cost of the plugin in every verl process: ``import verl`` with the plugin vs without it, same run.

    python benchmarks/bench_import.py [--repeat 7]

verl loads ``verl.plugins`` entry points inside ``import verl``, in the driver, the TaskRunner and every Ray worker,
whether or not the run uses GRPO-RoC. Each measurement is a fresh interpreter (``python -c "import verl"``); the
baseline disables external plugins (``VERL_USE_EXTERNAL_PLUGINS=none``, verl's own switch). Runs alternate so that
background load hits both alike; medians are compared. Target: with/without <= 1.1x. Also printed: the modules the
plugin adds to ``import verl``, and the cost of the registries a training process really opens (agent loop, reward
loop, core_algos), where the plugin's components load on first use. Exit status 1 if the target is missed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

TARGET_RATIO = 1.1
IMPORT_VERL = "import verl"
OPEN_REGISTRIES = (
    "import verl, verl.trainer.ppo.core_algos, verl.experimental.agent_loop, verl.experimental.reward_loop"
)
LIST_MODULES = "import sys, verl; print('\\n'.join(sorted(sys.modules)))"


def _run(code: str, plugins: str) -> tuple[float, str]:
    env = {**os.environ, "VERL_USE_EXTERNAL_PLUGINS": plugins, "PYTHONWARNINGS": "ignore"}
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return time.perf_counter() - start, out.stdout


def _compare(code: str, repeat: int) -> tuple[float, float]:
    without, with_plugin = [], []
    _run(code, "none")  # warm the page cache once
    for _ in range(repeat):
        without.append(_run(code, "none")[0])
        with_plugin.append(_run(code, "auto")[0])
    return statistics.median(without), statistics.median(with_plugin)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)

    extra = sorted(set(_run(LIST_MODULES, "auto")[1].split()) - set(_run(LIST_MODULES, "none")[1].split()))
    print(f"modules the plugin adds to `import verl`: {len(extra)} {extra[:10]}")
    base, plugin = _compare(IMPORT_VERL, args.repeat)
    ratio = plugin / base
    print(
        f"import verl: without plugin {base:.2f} s, with plugin {plugin:.2f} s (median of {args.repeat}): {ratio:.3f}x"
    )
    base_r, plugin_r = _compare(OPEN_REGISTRIES, max(3, args.repeat // 2))
    print(
        f"import verl + core_algos + agent_loop + reward_loop (what a rollout/reward worker opens): "
        f"without {base_r:.2f} s, with {plugin_r:.2f} s: {plugin_r / base_r:.3f}x (components load on first use)"
    )
    ok = ratio <= TARGET_RATIO
    print(f"{'PASS' if ok else 'FAIL'}  import verl with the plugin <= {TARGET_RATIO}x without ({ratio:.3f}x)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
