"""One benchmark report over recorded evaluations: our Pi0.5 and Pi0 beside published numbers, per task.

`python -m vla.eval.benchmark <eval dirs | sweep dirs ...> --out docs/benchmark` reads every summary.json under the
given directories (what eval.py writes, see vla.eval.report) and writes benchmark.md, benchmark.png and benchmark.json.
The rows, targets and published anchors come from conf/benchmark/maniskill3.yaml (`--spec` for another file).

* Rows: the spec's tasks in its order, matched by the evaluation's `env_id` (task variants such as
  pickcube_wristcam_rel count as PickCube-v1). A task with no evaluation says "not trained yet".
* Columns: ours by the summary's `model`: names starting with `pi05` are Pi0.5, other `pi0...` names Pi0.
* One evaluation per (task, model), never a pick: two or more evaluations of the same task with the same model are an
  error naming them. Pass only the directories you mean, or `--seed N` to keep the evaluations whose episode seeds
  start at N (one seed set for every cell).
* Our rates: success_once and success_at_end with a Wilson score interval (the spec's `confidence`). Targets, the
  plot and the anchors (which report success within an episode) are read against the spec's `metric`: success_once.
* Demos: the episode count of the training dataset (its LeRobot meta/info.json, at the `task.dataset_root` of the
  checkpoint's config.yaml), else that config's `task.demos.num_demos` (marked "config": it is what the task config
  said, which need not be the dataset's size), else "?".
* GPU minutes, training: the sum over the run's metrics.jsonl records up to the evaluated checkpoint's step of
  `perf/step_time_s` x the steps in that record's window, times the ranks (`hardware.num_processes` x `num_nodes`,
  one GPU each) when `hardware.device` is cuda. It counts the time in training steps (data waits and the first steps' compilation
  included); start-up before the first step, image caching, checkpoint writes and time between restarts are not in
  it. Steps re-done after a resume from an earlier checkpoint count again. GPU minutes, evaluation: the evaluation's
  `wall_s` (model loading excluded) on its one GPU when its device is cuda; a CPU run counts 0 GPU minutes and its
  CPU minutes are shown.
* Relative paths recorded in a summary (checkpoint) or a run config (dataset) are resolved against `--root`, the
  directory eval.py and train.py ran in (default: the current directory).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from importlib.resources import files
from pathlib import Path
from statistics import NormalDist

from omegaconf import OmegaConf

from vla.configs import CONFIG_MODULE
from vla.eval.report import read_summaries
from vla.runs import read_metrics

DEFAULT_SPEC = Path(str(files(CONFIG_MODULE) / "benchmark" / "maniskill3.yaml"))  # conf/benchmark, installed too
# our columns: the first prefix a summary's `model` name starts with decides it (pi05_small -> Pi0.5)
OURS = (("pi05", "Pi0.5"), ("pi0", "Pi0"))


class BenchmarkError(ValueError):
    """Bad input: the message is one line naming the file, what was expected, what was found and the fix."""


# ---------------------------------------------------------------------------------------------------------- the spec


@dataclass
class TaskTarget:
    env_id: str
    target: float  # success_once in percent


@dataclass
class Anchor:
    """Someone else's published success rates (percent per env id; null: not reported)."""

    name: str
    short: str  # plot label
    model: str
    demos: str
    episodes: str
    protocol: str
    source: str
    citation: str
    success: dict[str, float | None] = field(default_factory=dict)


@dataclass
class BenchmarkSpec:
    name: str
    metric: str
    confidence: float
    tasks: list[TaskTarget] = field(default_factory=list)
    anchors: list[Anchor] = field(default_factory=list)


def _typed(schema: type, node, where: str, path: Path):
    """`node` checked against a dataclass schema: a wrong type, an unknown or a missing key is one line."""
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), node))
    except Exception as e:  # OmegaConf's message spans lines: the first says what, full_key where
        lines = str(e).splitlines()
        key = next((ln.split(":", 1)[1].strip() for ln in lines if ln.strip().startswith("full_key")), "")
        raise BenchmarkError(f"{path}: {where}{'.' if where and key else ''}{key}: {lines[0]}; "
                             f"fix the file (schema: vla.eval.benchmark.{schema.__name__})") from None


def load_spec(path: str | Path = DEFAULT_SPEC) -> BenchmarkSpec:
    path = Path(path)
    if not path.is_file():
        raise BenchmarkError(f"benchmark spec not found: {path} (expected a YAML file like {DEFAULT_SPEC})")
    raw = OmegaConf.to_container(OmegaConf.load(path))
    lists = {key: raw.pop(key, []) for key in ("tasks", "anchors")}
    spec: BenchmarkSpec = _typed(BenchmarkSpec, raw, "", path)
    spec.tasks = [_typed(TaskTarget, t, f"tasks[{i}]", path) for i, t in enumerate(lists["tasks"])]
    spec.anchors = [_typed(Anchor, a, f"anchors[{i}]", path) for i, a in enumerate(lists["anchors"])]
    env_ids = [t.env_id for t in spec.tasks]
    if spec.metric not in ("success_once", "success_at_end"):
        raise BenchmarkError(f"{path}: metric: expected success_once or success_at_end, found {spec.metric!r}")
    if not 0 < spec.confidence < 1:
        raise BenchmarkError(f"{path}: confidence: expected a level in (0, 1) such as 0.95, found {spec.confidence}")
    for a in spec.anchors:
        for env_id, value in a.success.items():
            if env_id not in env_ids:
                raise BenchmarkError(f"{path}: anchor {a.name!r}: task {env_id!r} is not one of tasks {env_ids}")
            if value is not None and not 0 <= value <= 100:
                raise BenchmarkError(f"{path}: anchor {a.name!r}: {env_id}: expected a percentage, found {value}")
    return spec


# -------------------------------------------------------------------------------------------------------- statistics


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial rate (Wilson 1927): the rates p whose normal test against the observed
    successes/n does not reject at the given level. Unlike p ± z·sqrt(p(1-p)/n) it stays inside [0, 1] and has
    width at 0/n and n/n."""
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"wilson_interval: expected 0 <= successes <= n and n >= 1, found {successes}/{n}")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    denominator = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, center - half), min(1.0, center + half)


# ------------------------------------------------------------------------------------------------- our evaluations


def model_family(model: str, where: Path) -> str:
    for prefix, family in OURS:
        if model.startswith(prefix):
            return family
    raise BenchmarkError(f"{where}: model {model!r}: expected a name starting with pi05 (Pi0.5) or pi0 (Pi0)")


def find_evaluations(dirs: list[Path], env_ids: list[str], seed: int | None = None) -> dict[tuple[str, str], dict]:
    """(env_id, family) -> {"path": summary.json, "summary": ...}: exactly one evaluation each, or an error."""
    found: dict[tuple[str, str], list[tuple[Path, dict]]] = {}
    required = ("env_id", "model", "episodes", "successes_once", "successes_at_end", "seeds")
    for f, summary in read_summaries(dirs, required, BenchmarkError):
        if summary["env_id"] not in env_ids:
            raise BenchmarkError(f"{f}: env_id {summary['env_id']!r} is not a task of the benchmark "
                                 f"{env_ids}; leave this directory out or add the task to the spec")
        if seed is not None and summary.get("seed") != seed:
            continue
        key = (summary["env_id"], model_family(summary["model"], f))
        found.setdefault(key, []).append((f, summary))
    for (env_id, family), evals in found.items():
        paths = sorted({str(p.resolve()) for p, _ in evals})
        if len(paths) > 1:
            raise BenchmarkError(
                f"{len(paths)} evaluations of {env_id} with {family}: {', '.join(paths)}; the benchmark does not "
                f"choose among them: pass only the one you mean, or --seed N to keep one seed set")
    return {key: {"path": evals[0][0], "summary": evals[0][1]} for key, evals in found.items()}


def _resolve(path: str | Path, root: Path) -> Path:
    path = Path(path)
    return path if path.is_absolute() else root / path


def training_record(checkpoint: str | None, root: Path) -> dict:
    """What the evaluated checkpoint's run recorded: demos and training time (None where it cannot be told)."""
    record = {"run_dir": None, "demos": None, "demos_source": None, "train_device": None, "train_processes": None,
              "train_minutes": None, "train_gpu_minutes": None}
    if not checkpoint:
        return record
    ckpt = _resolve(checkpoint, root)
    run_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt
    record["run_dir"] = str(run_dir)
    config_path = next((p for p in (ckpt / "config.yaml", run_dir / "config.yaml") if p.is_file()), None)
    cfg = OmegaConf.load(config_path) if config_path else None
    if cfg is not None:
        record["demos"], record["demos_source"] = _demos(cfg, root)
        record["train_device"] = OmegaConf.select(cfg, "hardware.device")
        record["train_processes"] = (OmegaConf.select(cfg, "hardware.num_processes", default=1)
                                     * OmegaConf.select(cfg, "hardware.num_nodes", default=1))
    if (run_dir / "metrics.jsonl").is_file():
        up_to = int(ckpt.name) if ckpt.name.isdigit() else None
        record["train_minutes"] = train_seconds(read_metrics(run_dir), up_to) / 60
        if record["train_device"] == "cuda":
            record["train_gpu_minutes"] = record["train_minutes"] * record["train_processes"]
        elif record["train_device"] is not None:
            record["train_gpu_minutes"] = 0.0
    return record


def _demos(cfg, root: Path) -> tuple[int | None, str | None]:
    dataset_root = OmegaConf.select(cfg, "task.dataset_root")
    info = _resolve(dataset_root, root) / "meta" / "info.json" if dataset_root else None
    if info is not None and info.is_file():
        return int(json.loads(info.read_text())["total_episodes"]), "dataset"
    num_demos = OmegaConf.select(cfg, "task.demos.num_demos")
    return (int(num_demos), "config") if num_demos is not None else (None, None)


def train_seconds(records: list[dict], up_to_step: int | None = None) -> float:
    """Seconds in training steps from metrics.jsonl: each record's step_time_s is its window's time per step and the
    window runs from the previous record's step. Where the step goes back or repeats, the run was resumed from an
    earlier checkpoint (not recorded in the file); the window then starts at the log interval before it, the interval
    being the most common gap between records."""
    steps = [r["step"] for r in records]
    gaps = Counter(b - a for a, b in zip(steps, steps[1:]) if b > a)
    log_interval = gaps.most_common(1)[0][0] if gaps else None
    total, previous = 0.0, 0
    for r in records:
        step = r["step"]
        if up_to_step is not None and step > up_to_step:
            previous = step
            continue
        if step > previous:
            window = step - previous
        else:
            window = (step - 1) % log_interval + 1 if log_interval else step
        total += r["perf/step_time_s"] * window
        previous = step
    return total


def seed_range(seeds: list[int]) -> str:
    if not seeds:
        return "?"
    first, last = min(seeds), max(seeds)
    contiguous = sorted(seeds) == list(range(first, last + 1))
    return f"{first}–{last}" if contiguous else f"{len(seeds)} seeds in {first}–{last}"


def our_cell(evaluation: dict, family: str, confidence: float, root: Path) -> dict:
    s, path = evaluation["summary"], evaluation["path"]
    n = s["episodes"]
    eval_minutes = s["wall_s"] / 60 if s.get("wall_s") is not None else None
    return {
        "family": family, "model": s["model"], "task_config": s.get("task"), "evaluation": str(path.parent),
        "checkpoint": s.get("checkpoint"), "episodes": n,
        "successes_once": s["successes_once"], "success_once": s["successes_once"] / n,
        "success_once_interval": wilson_interval(s["successes_once"], n, confidence),
        "successes_at_end": s["successes_at_end"], "success_at_end": s["successes_at_end"] / n,
        "success_at_end_interval": wilson_interval(s["successes_at_end"], n, confidence),
        "seed": s.get("seed"), "seeds": seed_range(s["seeds"]),
        "eval_device": s.get("device"), "eval_minutes": eval_minutes,
        "eval_gpu_minutes": None if eval_minutes is None else eval_minutes if s.get("device") == "cuda" else 0.0,
        "reached_once": s.get("reached_once") or {}, "closest_distance": s.get("closest_distance"),
        **training_record(s.get("checkpoint"), root),
    }


# -------------------------------------------------------------------------------------------------------- the rows


def verdict(cell: dict | None, target: float, metric: str) -> str:
    if cell is None:
        return "not trained yet"
    pct = 100 * cell[f"successes_{metric.removeprefix('success_')}"] / cell["episodes"]
    return "met" if pct >= target else f"short by {target - pct:.1f} points"


def build_rows(spec: BenchmarkSpec, evaluations: dict, root: Path) -> list[dict]:
    rows = []
    for task in spec.tasks:
        ours = {family: our_cell(evaluations[(task.env_id, family)], family, spec.confidence, root)
                if (task.env_id, family) in evaluations else None for _, family in OURS}
        anchors = {a.name: a.success.get(task.env_id) for a in spec.anchors}
        reported = [(value, a) for a in spec.anchors if (value := a.success.get(task.env_id)) is not None]
        best = max(reported, key=lambda va: va[0], default=None)
        rows.append({
            "env_id": task.env_id, "target": task.target, "ours": ours, "anchors": anchors,
            "best_anchor": {"name": best[1].name, "short": best[1].short, "success": best[0]} if best else None,
            "verdict": {family: verdict(cell, task.target, spec.metric) for family, cell in ours.items()},
        })
    return rows


# -------------------------------------------------------------------------------------------------------- markdown


def _interval(cell: dict, metric: str) -> str:
    lo, hi = cell[f"{metric}_interval"]
    return f"{100 * cell[metric]:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def _gpu_minutes(cell: dict, phase: str) -> str:
    """A cell's GPU minutes of `phase` (train | eval); a CPU phase counts 0 and shows its CPU minutes."""
    minutes = cell[f"{phase}_gpu_minutes"]
    if minutes is None:
        return "?"
    if cell[f"{phase}_device"] == "cuda":
        return f"{minutes:.1f}" + (f" ({cell['train_processes']} GPU)" if phase == "train" else "")
    return f"0 ({cell[f'{phase}_device']}: {cell[f'{phase}_minutes']:.1f} min)"


def what_failed(cell: dict) -> str:
    parts = []
    if cell["reached_once"]:
        flags = ", ".join(f"{k} {100 * v:.0f}%" for k, v in cell["reached_once"].items())
        parts.append(f"reached at some step: {flags}")
    if d := cell["closest_distance"]:
        parts.append(f"closest goal distance median {100 * d['median']:.1f} cm "
                     f"(quartiles {100 * d['p25']:.1f}–{100 * d['p75']:.1f}, min {100 * d['min']:.1f})")
    return "; ".join(parts) or "not recorded"


def _percent(value: float | None) -> str:
    return "– (not reported)" if value is None else f"{value:g}"


def our_summary(cell: dict | None, metric: str) -> str:
    """once and at-end rates with intervals, the metric that targets are read against in bold."""
    if cell is None:
        return "not trained yet"
    once, end = _interval(cell, "success_once"), _interval(cell, "success_at_end")
    once, end = (f"**{once}**", end) if metric == "success_once" else (once, f"**{end}**")
    return f"{once}, at end {end}; n={cell['episodes']}, `{cell['model']}`"


def summary_table(spec: BenchmarkSpec, rows: list[dict]) -> list[str]:
    ours = [f"ours {family}" for _, family in OURS]
    anchors = [f"† {a.name}" for a in spec.anchors]
    header = ["task", "target", *ours, *anchors, "target met?"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [our_summary(cell, spec.metric) for cell in row["ours"].values()]
        verdicts = "; ".join(f"{family}: {v}" for family, v in row["verdict"].items())
        lines.append("| " + " | ".join([row["env_id"], f"≥ {row['target']:g}", *cells,
                                          *(_percent(v) for v in row["anchors"].values()), verdicts]) + " |")
    return lines


def detail_table(rows: list[dict], confidence: float) -> list[str]:
    level = f"[{100 * confidence:g}%]"
    header = ["task", "ours", "model (task config)", f"success_once {level}", f"success_at_end {level}", "episodes",
              "seeds", "demos", "train GPU-min", "eval GPU-min", "what failed", "evaluation"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        for family, c in row["ours"].items():
            if c is None:  # the summary table says so
                continue
            demos = "?" if c["demos"] is None else f"{c['demos']:,} ({c['demos_source']})"
            lines.append("| " + " | ".join([
                row["env_id"], family, f"`{c['model']}` ({c['task_config']})", _interval(c, "success_once"),
                _interval(c, "success_at_end"), str(c["episodes"]), c["seeds"], demos, _gpu_minutes(c, "train"),
                _gpu_minutes(c, "eval"), what_failed(c), f"`{c['evaluation']}`"]) + " |")
    return lines


def markdown(spec: BenchmarkSpec, rows: list[dict], selection: str) -> str:
    level = f"{100 * spec.confidence:g}%"
    lines = [
        f"# Benchmark: {spec.name}", "",
        f"Ours: success_once, then success_at_end, in percent with their {level} Wilson score intervals in "
        f"brackets, the number of episodes n and the model config; targets are read against {spec.metric} (bold). "
        f"Columns marked † are other people's published numbers (sources below), not measured here, under their "
        f"own protocols.",
        "", *summary_table(spec, rows), "",
        "## Our evaluations", "", *detail_table(rows, spec.confidence), "",
        "## Published anchors (others' numbers)", "",
    ]
    for a in spec.anchors:
        lines.append(f"* **† {a.name}**: {a.model}; demos: {a.demos}; episodes: {a.episodes}; protocol: "
                     f"{a.protocol}. Source: {a.source} ({a.citation})")
    lines += [
        "", "## How these numbers are made", "",
        f"* Selection: {selection}",
        f"* Interval: Wilson score interval at {level} (`vla.eval.benchmark.wilson_interval`).",
        f"* Target: \"met\" when our {spec.metric} is at or above it, else the points it is short by.",
        "* Demos: the training dataset's episode count (\"dataset\": its meta/info.json), else `task.demos.num_demos` "
        "of the checkpoint's config.yaml (\"config\": what the task config said; the dataset may differ), else ?.",
        "* train GPU-min: the run's metrics.jsonl, Σ perf/step_time_s × steps per log window up to the evaluated "
        "checkpoint, × GPUs: time in training steps only (no start-up, image caching or checkpoint writes). "
        "eval GPU-min: the evaluation's wall_s on one GPU (model loading excluded); CPU runs count 0 GPU minutes.",
        "* What failed: the share of episodes in which each env flag held at some step, and the quartiles over "
        "episodes of the closest goal distance (cm), where the evaluation recorded them.",
    ]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------------------ plot


def plot(spec: BenchmarkSpec, rows: list[dict], path: Path) -> None:
    """Grouped bars per task: ours (error bars: the Wilson interval), the best published anchor, the target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    fig, ax = plt.subplots(figsize=(1.7 * len(rows) + 2, 4.2))
    width = 0.26
    anchor_style = {"color": "0.7", "hatch": "//"}
    for i, row in enumerate(rows):
        for k, (_, family) in enumerate(OURS):
            x, cell = i + (k - 1) * width, row["ours"][family]
            if cell is None:
                ax.text(x, 1, "not trained yet", rotation=90, ha="center", va="bottom", fontsize=6, color="0.4")
                continue
            lo, hi = cell[f"{spec.metric}_interval"]
            value = 100 * cell[spec.metric]
            ax.bar(x, value, width, color=f"C{k}", yerr=[[value - 100 * lo], [100 * hi - value]], capsize=3)
        if best := row["best_anchor"]:
            ax.bar(i + width, best["success"], width, **anchor_style)
            ax.text(i + width, best["success"] + 1, best["short"], rotation=90, ha="center", va="bottom", fontsize=6)
        ax.plot(i, row["target"], marker="_", markersize=40, markeredgewidth=2, color="k")
    handles = [*(Patch(color=f"C{k}", label=f"ours {family}") for k, (_, family) in enumerate(OURS)),
               Patch(label="best published anchor † (others' number)", **anchor_style),
               Line2D([], [], marker="_", markersize=15, markeredgewidth=2, color="k", linestyle="", label="target")]
    ax.legend(handles=handles, fontsize=7, loc="upper center", ncol=4)
    ax.set_xticks(range(len(rows)), [r["env_id"] for r in rows], rotation=15)
    ax.set_ylim(0, 125)
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel(f"{spec.metric} (%)")
    ax.set_title(f"{spec.name}: {spec.metric}, ours with {100 * spec.confidence:g}% Wilson intervals", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------------- output


def write_benchmark(dirs: list[Path], out: Path, spec_path: Path = DEFAULT_SPEC, seed: int | None = None,
                    root: Path = Path(".")) -> str:
    """Everything is read and checked before anything is written; the files go to a temp dir first and are then
    moved into `out` one by one, so a failure leaves no partial report."""
    spec = load_spec(spec_path)
    evaluations = find_evaluations(dirs, [t.env_id for t in spec.tasks], seed)
    rows = build_rows(spec, evaluations, root)
    selection = ("one evaluation per task and model, required unique (no best-of)"
                 + (f", among those with episode seeds starting at {seed}" if seed is not None else "")
                 + f"; from {', '.join(map(str, dirs))}.")
    text = markdown(spec, rows, selection)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".benchmark-") as tmp:
        tmp = Path(tmp)
        (tmp / "benchmark.md").write_text(text)
        (tmp / "benchmark.json").write_text(json.dumps(
            {"spec": asdict(spec), "selection": selection, "rows": rows}, indent=1, default=str))
        plot(spec, rows, tmp / "benchmark.png")
        for name in ("benchmark.md", "benchmark.json", "benchmark.png"):
            os.replace(tmp / name, out / name)
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dirs", nargs="+", type=Path, help="evaluation or sweep directories (searched for summary.json)")
    ap.add_argument("--out", type=Path, default=Path("docs/benchmark"), help="where benchmark.md/.json/.png go")
    ap.add_argument("--spec", type=Path, default=DEFAULT_SPEC, help="tasks, targets and anchors (YAML)")
    ap.add_argument("--seed", type=int, default=None, help="keep only evaluations whose episode seeds start here")
    ap.add_argument("--root", type=Path, default=Path("."), help="where recorded relative paths are resolved")
    args = ap.parse_args()
    try:
        print(write_benchmark(args.dirs, args.out, args.spec, args.seed, args.root))
    except BenchmarkError as e:
        sys.exit(f"benchmark: error: {e}")


if __name__ == "__main__":
    main()
