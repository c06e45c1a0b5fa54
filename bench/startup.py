"""Benchmark 5: cold start of the CLI, against ``python -c pass`` as the floor.

Each command runs as a fresh process (the console script in the venv), one
after another, interleaved round by round so a noisy moment hits all of them;
wall time from spawn to exit.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

from bench.common import PYTHON, ROOT, Row, median, percentile


def _commands(store: str) -> dict[str, tuple[list[str], str]]:
    voicecall = str(Path(PYTHON).parent / "voicecall")
    config = str(ROOT / "examples" / "voicecall.yaml")
    return {
        "python -c pass (floor)": ([PYTHON, "-c", "pass"], ""),
        "voicecall --help": ([voicecall, "--help"], "< floor + 150 ms"),
        "voicecall validate-config": ([voicecall, "validate-config", "--config", config], "< 400 ms"),
        "voicecall status": ([voicecall, "status", "--config", config], ""),
    }


def run(*, quick: bool = False) -> list[Row]:
    rounds = 1 if quick else 20
    with tempfile.TemporaryDirectory(prefix="voicecall-bench-start-") as home:
        # A fresh HOME: the default store is empty and no runtime listens; status reads the store.
        env = {**os.environ, "HOME": home}
        commands = _commands(home)
        samples: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(rounds):
            for name, (argv, _target) in commands.items():
                t0 = time.perf_counter()
                done = subprocess.run(argv, cwd=home, env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True)
                samples[name].append((time.perf_counter() - t0) * 1000)
                if done.returncode != 0:
                    raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr[-300:]}")
    floor = median(samples["python -c pass (floor)"])
    rows = []
    for name, (_argv, target) in commands.items():
        values = samples[name]
        above = "" if name.startswith("python") else f"{median(values) - floor:.0f} ms above the floor; "
        rows.append(Row("5 start-up", name, "ms", median(values), percentile(values, 99),
                        baseline=None if name.startswith("python") else floor, target=target,
                        note=f"{above}n={rounds}"))
    return rows
