"""Start-up cost of the `tnlm` command: wall time and peak memory of light commands in fresh
processes, side by side with a bare Python and with `import torch` (what every command paid before
the command modules imported their heavy libraries lazily), as ratios to `import torch`.

    python benchmarks/startup.py [--repeats N]

Prints a table and writes benchmarks/results/startup.{json,png}."""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
CASES = {
    "python -c pass": ["-c", "pass"],
    "tnlm --version": ["-m", "tnlm", "--version"],
    "tnlm --help": ["-m", "tnlm", "--help"],
    "tnlm generate -h": ["-m", "tnlm", "generate", "-h"],
    "tnlm data steps": ["-m", "tnlm", "data", "steps"],
    "import torch": ["-c", "import torch"],
    "import tnlm.models": ["-c", "import tnlm.models"],
}


def seconds(args: list[str]) -> float:
    """Wall time of one fresh process."""
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def peak_mb(args: list[str]) -> float:
    """Peak RSS of one fresh process, measured by a parent that runs only it."""
    code = ("import resource, subprocess, sys; subprocess.run([sys.executable, *sys.argv[1:]], "
            "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)")
    out = subprocess.run([sys.executable, "-c", code, *args], check=True, capture_output=True, text=True).stdout
    return float(out.strip())


def run(repeats: int) -> list[dict]:
    rows = {name: {"name": name, "seconds": [], "peak_mb": peak_mb(args)} for name, args in CASES.items()}
    for _ in range(repeats):  # interleaved, so a busy moment hits every case alike
        for name, args in CASES.items():
            rows[name]["seconds"].append(seconds(args))
    torch_s = min(rows["import torch"]["seconds"])
    for row in rows.values():
        row["best_s"] = min(row["seconds"])
        row["vs_import_torch"] = row["best_s"] / torch_s
    return list(rows.values())


def print_table(rows: list[dict]) -> None:
    print(f"{'command':22s} {'best s':>8s} {'peak MB':>8s} {'vs import torch':>16s}")
    for r in rows:
        print(f"{r['name']:22s} {r['best_s']:8.2f} {r['peak_mb']:8.0f} {r['vs_import_torch']:16.2f}")


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.4 * len(rows) + 1.5))
    ax.barh([r["name"] for r in rows][::-1], [r["best_s"] for r in rows][::-1], color="tab:blue")
    ax.set_xlabel("seconds (best of the repeats, fresh process)")
    ax.set_title("tnlm start-up")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rows = run(args.repeats)
    print_table(rows)
    RESULTS.mkdir(exist_ok=True)
    result = {"machine": platform.platform(), "python": platform.python_version(), "repeats": args.repeats, "rows": rows}
    (RESULTS / "startup.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(rows, RESULTS / "startup.png")


if __name__ == "__main__":
    main()
