"""Evaluation results on disk, and the table/plot across tasks.

One evaluation (one task) writes into its directory:
  episodes.json   one record per episode: index, seed, success_once, success_at_end, first_success_step, steps, wall_s
  summary.json    rates, counts and every setting that defines the protocol (control mode, sim backend, horizon, ...)
  summary.md      the same as a one-row table
  success.png     bar chart
`python -m vla.eval.report <dirs...> [--out DIR]` gathers every summary.json under the given directories into one
table (markdown + JSON) and one bar chart; a `python eval.py -m ...` sweep does this by itself at the end.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

COLUMNS = ("task", "episodes", "success_once", "success_at_end", "mean_steps", "control_mode", "sim_backend",
           "max_episode_steps", "replan_steps", "checkpoint")


def summarize(episodes: list[dict], info: dict) -> dict:
    n = len(episodes)
    reached_keys = sorted({k for e in episodes for k in e.get("reached", {})})
    return {
        **info,
        "episodes": n,
        "successes_once": sum(e["success_once"] for e in episodes),
        "successes_at_end": sum(e["success_at_end"] for e in episodes),
        "success_once": sum(e["success_once"] for e in episodes) / n,
        "success_at_end": sum(e["success_at_end"] for e in episodes) / n,
        "mean_steps": sum(e["steps"] for e in episodes) / n,
        "mean_episode_wall_s": sum(e["wall_s"] for e in episodes) / n,
        # how far the failures got: the share of episodes in which each env flag (is_grasped, ...) held at some step
        "reached_once": {k: sum(e.get("reached", {}).get(k, False) for e in episodes) / n for k in reached_keys},
        # the task's goal_distance (PickCube: cube to goal, m): quartiles over episodes, at the start and at each
        # episode's closest approach
        **{key: _quartiles([e[key] for e in episodes if e.get(key) is not None])
           for key in ("initial_distance", "closest_distance")},
        "seeds": [e["seed"] for e in episodes],
    }


def _quartiles(values: list[float]) -> dict | None:
    if not values:
        return None
    q25, q50, q75 = np.percentile(values, [25, 50, 75])
    return {"p25": float(q25), "median": float(q50), "p75": float(q75), "min": float(min(values))}


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def markdown_table(summaries: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for s in summaries:
        row = {
            **{k: s.get(k, "") for k in COLUMNS},
            "success_once": f"{_pct(s['success_once'])} ({s['successes_once']}/{s['episodes']})",
            "success_at_end": f"{_pct(s['success_at_end'])} ({s['successes_at_end']}/{s['episodes']})",
            "mean_steps": f"{s['mean_steps']:.1f}",
        }
        lines.append("| " + " | ".join(str(row[k]) for k in COLUMNS) + " |")
    if len(summaries) > 1:
        mean = sum(s["success_once"] for s in summaries) / len(summaries)
        lines.append(f"\nMean success_once over {len(summaries)} tasks: {_pct(mean)}")
    return "\n".join(lines) + "\n"


def plot(summaries: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [s["task"] for s in summaries]
    x = range(len(names))
    fig, ax = plt.subplots(figsize=(max(4.0, 1.4 * len(names) + 1), 3.4))
    once = [100 * s["success_once"] for s in summaries]
    end = [100 * s["success_at_end"] for s in summaries]
    ax.bar([i - 0.2 for i in x], once, width=0.4, label="success_once")
    ax.bar([i + 0.2 for i in x], end, width=0.4, label="success_at_end")
    for i, s in enumerate(summaries):
        ax.text(i - 0.2, once[i] + 1, f"{s['successes_once']}/{s['episodes']}", ha="center", fontsize=7)
    ax.set_xticks(list(x), names, rotation=20)
    ax.set_ylim(0, 105)
    ax.set_ylabel("success rate (%)")
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_results(out_dir: Path, episodes: list[dict], info: dict) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize(episodes, info)
    (out_dir / "episodes.json").write_text(json.dumps(episodes, indent=1))
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    (out_dir / "summary.md").write_text(markdown_table([summary]))
    plot([summary], out_dir / "success.png")
    return summary


def summary_files(path: Path) -> list[Path]:
    """The summary.json files of one evaluation directory, a sweep directory above several, or the file itself."""
    path = Path(path)
    return [path] if path.is_file() else sorted(path.rglob("summary.json"))


def read_summaries(dirs: list[Path], required: tuple[str, ...], error: type[Exception]) -> list[tuple[Path, dict]]:
    """(path, summary) of every summary.json under `dirs`, each file once (a directory passed twice, or a sweep and one
    of its evaluations); a directory without one, or a summary missing a `required` key, raises `error` in one line."""
    found, seen = [], set()
    for d in dirs:
        files = summary_files(d) if Path(d).exists() else []
        if not files:
            raise error(f"{d}: no summary.json in it or below it; expected an evaluation directory written by eval.py "
                        f"(or a sweep directory above several)")
        for f in files:
            if f.resolve() in seen:
                continue
            seen.add(f.resolve())
            summary = json.loads(f.read_text())
            missing = [k for k in required if k not in summary]
            if missing:
                raise error(f"{f}: missing keys {missing}; expected a summary.json written by eval.py")
            found.append((f, summary))
    return found


def collect(dirs: list[Path]) -> list[dict]:
    summaries = []
    for d in dirs:
        summaries += [json.loads(f.read_text()) for f in summary_files(d)]
    if not summaries:
        raise FileNotFoundError(f"no summary.json under {', '.join(map(str, dirs))}")
    return summaries


def write_report(dirs: list[Path], out: Path) -> str:
    summaries = collect(dirs)
    out.mkdir(parents=True, exist_ok=True)
    table = markdown_table(summaries)
    (out / "report.md").write_text(table)
    (out / "report.json").write_text(json.dumps(summaries, indent=1))
    plot(summaries, out / "report.png")
    return table


try:
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover
    Callback = object


class MultirunReport(Callback):
    """Hydra callback: after `python eval.py -m ...`, the combined report in the sweep directory."""

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep = Path(config.hydra.sweep.dir)
        if list(sweep.rglob("summary.json")):
            print(write_report([sweep], sweep))
            print(f"report: {sweep / 'report.md'}, {sweep / 'report.png'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dirs", nargs="+", type=Path, help="evaluation directories (searched for summary.json)")
    ap.add_argument("--out", type=Path, default=Path("."), help="where report.md/.json/.png go")
    args = ap.parse_args()
    print(write_report(args.dirs, args.out))


if __name__ == "__main__":
    main()
