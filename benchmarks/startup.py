"""How long the command line takes to answer: `--help`, a rejected flag, and `import gptforge`, in fresh processes.

Each case runs as its own process (the way a user meets it: nothing already imported), several times, and the table
gives the median and the fastest wall-clock time. A stored earlier measurement (`--baseline`, a JSON file this script
wrote) is printed next to the current one, so a change to what the fronts import shows as before/after figures.

Usage:
    python -m benchmarks.startup                                         # 5 rounds, table + runs/bench/startup.json
    python -m benchmarks.startup --baseline benchmarks/results/startup-before.json
    python -m benchmarks.startup --rounds 9 --save benchmarks/results/startup-after.json
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path


def _gptforge() -> list[str]:
    """The console script next to this interpreter (what `pip install` puts on PATH), else `python -m`."""
    script = Path(sys.executable).with_name("gptforge")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "gptforge.scripts.cli"]


def cases() -> dict[str, list[str]]:
    """Case name -> command; each runs with HF_HUB_OFFLINE=1."""
    gptforge = _gptforge()
    return {
        "gptforge --help": [*gptforge, "--help"],
        "gptforge generate --help": [*gptforge, "generate", "--help"],
        "gptforge pretrain --no-such-flag": [*gptforge, "pretrain", "--no-such-flag"],
        "import gptforge": [sys.executable, "-c", "import gptforge"],
        "import gptforge + Auto lookup": [
            sys.executable,
            "-c",
            "import gptforge, transformers; transformers.AutoConfig.for_model('gptforge')",
        ],
    }


def time_once(command: list[str]) -> float:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - start


def measure(rounds: int) -> dict[str, dict[str, float]]:
    """Median and minimum seconds per case; the cases alternate within a round so background load hits all alike."""
    commands = cases()
    time_once(commands["import gptforge"])  # warm the file cache: the first process reads every .pyc from disk
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(rounds):
        for name, command in commands.items():
            times[name].append(time_once(command))
    return {name: {"median_s": statistics.median(t), "min_s": min(t)} for name, t in times.items()}


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="runs per case")
    parser.add_argument("--baseline", type=Path, default=None, help="an earlier JSON result to print alongside")
    parser.add_argument("--save", type=Path, default=Path("runs/bench/startup.json"), help="where the JSON goes")
    args = parser.parse_args()

    result = {"machine": machine(), "rounds": args.rounds, "cases": measure(args.rounds)}
    baseline = json.loads(args.baseline.read_text())["cases"] if args.baseline else {}
    print(f"startup, {result['machine']}; median (fastest) of {args.rounds} fresh processes")
    width = max(len(name) for name in result["cases"])
    header = f"{'case':<{width}}  {'now':>16}" + (f"  {'baseline':>16}  {'speed-up':>8}" if baseline else "")
    print(header)
    for name, now in result["cases"].items():
        line = f"{name:<{width}}  {now['median_s']:>7.2f} s ({now['min_s']:.2f})"
        if name in baseline:
            before = baseline[name]
            line += f"  {before['median_s']:>7.2f} s ({before['min_s']:.2f})"
            line += f"  {before['median_s'] / now['median_s']:>7.1f}x"
        print(line)
    args.save.parent.mkdir(parents=True, exist_ok=True)
    args.save.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
