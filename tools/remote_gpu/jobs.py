"""The Python steps of the remote-GPU-host scripts (tools/remote_gpu/*.sh), one subcommand each, run from the
repository root as `python3 -m tools.remote_gpu.jobs <command> ...`:

  recipe EXPERIMENT              the recipe's "<dataset_root> <env_id> <control_mode> <sim_backend>" (demos.sh, train.sh)
  size-run METRICS --started T   training steps that fit a time budget, from a short probe run's metrics (for sizing
                                 a run by hand: train.sh takes the recipe's num_steps or STEPS)
  report RUN STATE               one line of a run's newest metrics (wait.sh)
  newest-checkpoint RUN_DIR      the run's newest checkpoint with weights (pack.sh)
  summaries EVAL_ROOT            one line per evaluation summary under EVAL_ROOT (eval.sh)

Bad input ends with one error line on stderr and exit status 1, so that the calling script can stop.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from vla.runs import read_metrics

REPORT_KEYS = ("step", "train/loss", "perf/step_time_s", "train/lr")
SUMMARY_KEYS = ("episodes", "success_once", "success_at_end")


def recipe_data(experiment: str) -> tuple[str, str, str, str]:
    """Where a recipe's dataset goes, and what names ManiSkill's replay gives the file it writes."""
    from vla.configs import load_recipe

    task = load_recipe(experiment, app="convert").task
    return task.dataset_root, task.env_id, task.control_mode, task.sim_backend


def steps_for_budget(step_time_s: float, probe_elapsed_s: float, probe_steps: int, budget_s: float,
                     max_steps: int, multiple: int) -> tuple[int, float]:
    """How many steps a run can take in `budget_s` seconds, given a probe of `probe_steps` steps at `step_time_s` that
    took `probe_elapsed_s` from launch to exit: the probe's time beyond its steps is the start-up (imports, data,
    compilation) that the real run pays again. Rounded down to a `multiple`, kept within [multiple, max_steps].
    Returns (steps, start-up seconds)."""
    startup_s = probe_elapsed_s - probe_steps * step_time_s
    steps = int((budget_s - startup_s) / step_time_s) // multiple * multiple
    return max(multiple, min(steps, max_steps)), startup_s


def probe_step_time(metrics: Path) -> float:
    if not metrics.is_file():
        raise SystemExit(f"size-run: {metrics}: no such file (the probe run wrote no metrics; see its log)")
    times = [r["perf/step_time_s"] for r in read_metrics(metrics) if "perf/step_time_s" in r]
    if not times:
        raise SystemExit(f"size-run: {metrics}: no record with perf/step_time_s (the probe logged no step: "
                         f"run it for at least log_interval steps)")
    return times[-1]


def run_report(runs_dir: Path, run: str, state: str) -> str:
    """`<run> <state> {step, loss, step time, lr}` from the newest record of runs/<run>/metrics.jsonl ({} if none)."""
    metrics = runs_dir / run / "metrics.jsonl"
    records = read_metrics(metrics) if metrics.is_file() else []
    newest = records[-1] if records else {}
    return f"{run} {state} {({k: round(v, 4) for k, v in newest.items() if k in REPORT_KEYS})}"


def newest_checkpoint(run_dir: Path) -> Path:
    """The run's newest checkpoint that holds weights, as evaluation picks it (vla.runs.resolve_checkpoint)."""
    from vla.runs import resolve_checkpoint

    if not run_dir.is_dir():
        raise SystemExit(f"newest-checkpoint: {run_dir}: no such run directory")
    checkpoint = resolve_checkpoint(run_dir)
    if checkpoint == run_dir:
        raise SystemExit(f"newest-checkpoint: {run_dir}/checkpoints: no numbered checkpoint with ema.safetensors "
                         f"or model.safetensors (has the run saved one yet?)")
    return checkpoint


def eval_summaries(eval_root: Path) -> list[str]:
    """`<dir>/summary.json: {episodes, success_once, success_at_end}` for each evaluation under eval_root."""
    lines = []
    for path in sorted(eval_root.glob("*/summary.json")):
        summary = json.loads(path.read_text())
        lines.append(f"{path}: {({k: summary.get(k) for k in SUMMARY_KEYS})}")
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python3 -m tools.remote_gpu.jobs", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("recipe").add_argument("experiment")
    s = sub.add_parser("size-run")
    s.add_argument("metrics", type=Path, help="the probe run's metrics.jsonl")
    s.add_argument("--started", type=float, required=True, help="when the probe was launched (seconds since epoch)")
    s.add_argument("--probe-steps", type=int, required=True)
    s.add_argument("--budget", type=float, required=True, help="seconds the real run may take, start-up included")
    s.add_argument("--max-steps", type=int, required=True)
    s.add_argument("--multiple", type=int, default=100, help="round the steps down to a multiple of this")
    r = sub.add_parser("report")
    r.add_argument("run")
    r.add_argument("state")
    r.add_argument("--runs-dir", type=Path, default=Path("runs"))
    sub.add_parser("newest-checkpoint").add_argument("run_dir", type=Path)
    sub.add_parser("summaries").add_argument("eval_root", type=Path)
    args = ap.parse_args(argv)

    if args.cmd == "recipe":
        try:
            print(*recipe_data(args.experiment))
        except ValueError as e:
            raise SystemExit(f"recipe: {e}") from None
    elif args.cmd == "size-run":
        step_s = probe_step_time(args.metrics)
        steps, startup_s = steps_for_budget(step_s, time.time() - args.started, args.probe_steps, args.budget,
                                            args.max_steps, args.multiple)
        print(f"probe: {step_s * 1000:.1f} ms/step, start-up {startup_s:.0f} s -> {steps} steps", file=sys.stderr)
        print(steps)
    elif args.cmd == "report":
        print(run_report(args.runs_dir, args.run, args.state))
    elif args.cmd == "newest-checkpoint":
        print(newest_checkpoint(args.run_dir))
    else:
        for line in eval_summaries(args.eval_root):
            print(line)


if __name__ == "__main__":
    main()
