"""Training curves of one or more runs as a PNG (from their metrics.jsonl; TensorBoard shows the same scalars):

  python -m vla.train.plot runs/a runs/b --out curves.png [--keys train/loss train/lr]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vla.runs import read_metrics


def plot_runs(runs: list[Path], out: Path, keys: list[str], labels: list[str] | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.6), squeeze=False)
    for run, label in zip(runs, labels or [r.name for r in runs], strict=True):
        records = read_metrics(run)
        for ax, key in zip(axes[0], keys, strict=True):
            points = [(r["step"], r[key]) for r in records if key in r]
            if points:
                ax.plot(*zip(*points, strict=True), label=label)
    for ax, key in zip(axes[0], keys, strict=True):
        ax.set_title(key)
        ax.set_xlabel("step")
        if key.endswith("loss"):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--keys", nargs="+", default=["train/loss", "train/grad_norm", "train/lr"])
    ap.add_argument("--labels", nargs="+")
    args = ap.parse_args()
    print(plot_runs(args.runs, args.out, args.keys, args.labels))


if __name__ == "__main__":
    main()
