"""Success and action jerk under a simulated inference delay, naive vs real-time chunking, per task.

`python -m vla.eval.latency_report <eval dirs | sweep dirs ...> --out DIR` reads every summary.json under the given
directories (eval.py's latency mode, vla.eval.latency: `latency.delay_steps=d latency.rtc=true|false`) and writes
latency.md, latency.png and latency.json.

* Groups: one per (env_id, checkpoint): one table and one row of plots each. Within a group, one row per delay d
  (ascending), naive (rtc=false) and RTC (rtc=true) side by side; d=0 naive is the plain evaluation.
* A summary without a `latency` record (written before the latency mode existed) is a plain evaluation: d=0, naive.
  One without `action_change` shows "–" for it.
* Paired comparison: every evaluation of a group must use the same episode seeds and the same protocol
  (PROTOCOL_KEYS) and all its RTC evaluations the same RTC settings; otherwise one error line names both
  directories. `--seed N` keeps the evaluations whose episode seeds start at N. Two evaluations of the same
  (delay, rtc) in a group are an error naming both: the report never picks one.
* Success: success_once (success at any step) with a Wilson score interval (vla.eval.benchmark.wilson_interval).
  Action change: the mean L2 norm of a_t - a_(t-1) of the executed actions at the steps where a new chunk takes over
  (boundary) and at all other steps (interior).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from vla.eval.benchmark import seed_range, wilson_interval
from vla.eval.report import read_summaries

CONFIDENCE = 0.95  # level of the Wilson intervals, as the benchmark spec's
REQUIRED_KEYS = ("env_id", "episodes", "successes_once", "seeds")
# settings that change what an episode is: evaluations that differ in one of them are not compared in one table
PROTOCOL_KEYS = ("replan_steps", "action_horizon", "max_episode_steps", "num_denoise_steps", "control_mode")
RTC_KEYS = ("max_guidance_weight", "schedule")
PLAIN = {"delay_steps": 0, "rtc": False}  # what a summary without a latency record was evaluated with


class LatencyReportError(ValueError):
    """Bad input: the message is one line naming the directories, what was expected, what was found and the fix."""


def read_evaluations(dirs: list[Path], seed: int | None = None) -> list[dict]:
    """Every summary.json under `dirs` (those with episode seeds starting at `seed` if given), with its directory."""
    found = [{**summary, "dir": str(f.parent)}
             for f, summary in read_summaries(dirs, REQUIRED_KEYS, LatencyReportError)
             if seed is None or summary.get("seed") == seed]
    if not found:
        raise LatencyReportError(f"no evaluation with episode seeds starting at {seed} under "
                                 f"{', '.join(map(str, dirs))}; drop --seed or pass other directories")
    return found


def _same(first: dict, other: dict, keys: tuple[str, ...], what: str, group: str) -> None:
    differ = [f"{k} {first.get(k)!r} vs {other.get(k)!r}" for k in keys if first.get(k) != other.get(k)]
    if differ:
        raise LatencyReportError(f"{group}: {first['dir']} and {other['dir']} differ in {what} ({', '.join(differ)}); "
                                 f"a latency table compares one {what}: pass only the evaluations you mean")


def _cell(s: dict) -> dict:
    k, n = s["successes_once"], s["episodes"]
    change = s.get("action_change") or {}
    return {"dir": s["dir"], "episodes": n, "successes_once": k, "success_once": k / n,
            "success_once_interval": list(wilson_interval(k, n, CONFIDENCE)),
            "boundary_action_change": change.get("boundary"), "interior_action_change": change.get("interior")}


def build_groups(summaries: list[dict]) -> list[dict]:
    """One group per (env_id, checkpoint), each with its settings and one row per delay: {"naive": cell, "rtc": cell}
    (None where that pair was not evaluated). Mixed seeds, protocols, RTC settings and duplicates are refused."""
    by_key: dict[tuple[str, str], list[dict]] = {}
    for s in summaries:
        s["latency"] = {**PLAIN, **(s.get("latency") or {})}
        by_key.setdefault((s["env_id"], str(s.get("checkpoint"))), []).append(s)
    groups = []
    for (env_id, checkpoint), evals in sorted(by_key.items()):
        name, first = f"{env_id} with checkpoint {checkpoint}", evals[0]
        cells: dict[tuple[int, bool], dict] = {}
        for s in evals:
            if sorted(s["seeds"]) != sorted(first["seeds"]):
                raise LatencyReportError(
                    f"{name}: {first['dir']} and {s['dir']} differ in seeds ({seed_range(first['seeds'])} vs "
                    f"{seed_range(s['seeds'])}); a latency table compares one seed set: pass only the evaluations "
                    f"you mean or --seed N")
            _same(first, s, PROTOCOL_KEYS, "protocol", name)
            key = (s["latency"]["delay_steps"], s["latency"]["rtc"])
            if key in cells:
                raise LatencyReportError(
                    f"{name}: two evaluations of delay_steps={key[0]} rtc={str(key[1]).lower()} on the same seeds: "
                    f"{cells[key]['dir']} and {s['dir']}; the report does not choose: pass only the one you mean")
            cells[key] = s
        rtc_evals = [s for s in evals if s["latency"]["rtc"]]
        for s in rtc_evals[1:]:
            _same({**rtc_evals[0]["latency"], "dir": rtc_evals[0]["dir"]}, {**s["latency"], "dir": s["dir"]},
                  RTC_KEYS, "RTC settings", name)
        delays = sorted({d for d, _ in cells})
        groups.append({
            "env_id": env_id, "task": first.get("task"), "checkpoint": first.get("checkpoint"),
            "model": first.get("model"), "episodes": first["episodes"], "seeds": seed_range(first["seeds"]),
            "protocol": {k: first.get(k) for k in PROTOCOL_KEYS},
            "rtc_settings": {k: rtc_evals[0]["latency"].get(k) for k in RTC_KEYS} if rtc_evals else None,
            "rows": [{"delay_steps": d, **{mode: _cell(cells[(d, rtc)]) if (d, rtc) in cells else None
                                           for mode, rtc in (("naive", False), ("rtc", True))}} for d in delays],
        })
    return groups


# -------------------------------------------------------------------------------------------------------- markdown


def _success(cell: dict | None) -> str:
    if cell is None:
        return "–"
    lo, hi = cell["success_once_interval"]
    rate = f"{100 * cell['success_once']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"
    return f"{rate} ({cell['successes_once']}/{cell['episodes']})"


def _change(cell: dict | None, key: str) -> str:
    value = None if cell is None else cell[f"{key}_action_change"]
    return "–" if value is None else f"{value:.4f}"


def group_table(group: dict) -> list[str]:
    level = f"{100 * CONFIDENCE:g}%"
    p, rtc = group["protocol"], group["rtc_settings"]
    rtc_text = (f"RTC max_guidance_weight={rtc['max_guidance_weight']:g}, schedule={rtc['schedule']}" if rtc
                else "no RTC evaluation")
    header = ["delay d", f"naive success_once [{level}]", f"RTC success_once [{level}]", "naive boundary Δa",
              "RTC boundary Δa", "interior Δa (naive / RTC)", "episodes", "seeds"]
    lines = [f"## {group['env_id']} ({group['task']})", "",
             f"Checkpoint `{group['checkpoint']}` (`{group['model']}`); eval.replan_steps={p['replan_steps']}, "
             f"action horizon {p['action_horizon']}, {p['max_episode_steps']} steps per episode, "
             f"{p['num_denoise_steps']} denoising steps; {rtc_text}.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in group["rows"]:
        naive, rtc_cell = row["naive"], row["rtc"]
        lines.append("| " + " | ".join([
            str(row["delay_steps"]), _success(naive), _success(rtc_cell), _change(naive, "boundary"),
            _change(rtc_cell, "boundary"), f"{_change(naive, 'interior')} / {_change(rtc_cell, 'interior')}",
            str(group["episodes"]), group["seeds"]]) + " |")
    return lines


def markdown(groups: list[dict]) -> str:
    lines = ["# Success and action jerk under inference delay: naive vs real-time chunking", "",
             "Inference takes d control steps, during which the previous chunk keeps running (eval.py "
             "`latency.delay_steps=d`); RTC samples each chunk to continue it (`latency.rtc=true`). Success in percent "
             f"with its {100 * CONFIDENCE:g}% Wilson score interval and successes/episodes; Δa: mean L2 norm of "
             "a_t - a_(t-1) of the executed actions where a new chunk takes over (boundary) and at all other steps "
             "(interior). –: not evaluated, or not recorded by the evaluation.", ""]
    for group in groups:
        lines += [*group_table(group), ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------------ plot


def plot(groups: list[dict], path: Path) -> None:
    """Per task: success vs delay (Wilson error bars) and boundary action change vs delay, naive vs RTC."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(groups), 2, figsize=(9, 3.2 * len(groups)), squeeze=False)
    for (ax_success, ax_change), group in zip(axes, groups):
        for k, (mode, label) in enumerate((("naive", "naive"), ("rtc", "RTC"))):
            rows = [r for r in group["rows"] if r[mode] is not None]
            x = [r["delay_steps"] + (k - 0.5) * 0.08 for r in rows]  # side by side where the bars would overlap
            y = [100 * r[mode]["success_once"] for r in rows]
            err = [[v - 100 * r[mode]["success_once_interval"][0] for v, r in zip(y, rows)],
                   [100 * r[mode]["success_once_interval"][1] - v for v, r in zip(y, rows)]]
            ax_success.errorbar(x, y, yerr=err, marker="o", capsize=3, color=f"C{k}", label=label)
            jerk = [(r["delay_steps"], r[mode]["boundary_action_change"]) for r in rows
                    if r[mode]["boundary_action_change"] is not None]
            ax_change.plot([d for d, _ in jerk], [v for _, v in jerk], marker="o", color=f"C{k}", label=label)
        delays = [r["delay_steps"] for r in group["rows"]]
        for ax in (ax_success, ax_change):
            ax.set_xticks(delays)
            ax.set_xlabel("inference delay d (control steps)")
            ax.legend(fontsize=7)
        ax_success.set_ylim(0, 105)
        ax_success.set_ylabel(f"success_once (%), {100 * CONFIDENCE:g}% Wilson")
        ax_change.set_ylim(bottom=0)
        ax_change.set_ylabel("boundary action change |Δa|")
        ax_success.set_title(f"{group['env_id']}: success", fontsize=9)
        ax_change.set_title(f"{group['env_id']}: jerk where a new chunk takes over", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------------- output


def write_latency_report(dirs: list[Path], out: Path, seed: int | None = None) -> list[dict]:
    """Everything is read and checked before anything is written; the files go to a temp dir in `out` first and are
    then moved into place, so a failure leaves no partial report. Returns the groups (as latency.json holds them)."""
    groups = build_groups(read_evaluations(dirs, seed))
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".latency-") as tmp:
        tmp = Path(tmp)
        (tmp / "latency.md").write_text(markdown(groups))
        (tmp / "latency.json").write_text(json.dumps({"confidence": CONFIDENCE, "groups": groups}, indent=1))
        plot(groups, tmp / "latency.png")
        for name in ("latency.md", "latency.json", "latency.png"):
            os.replace(tmp / name, out / name)
    return groups


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m vla.eval.latency_report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dirs", nargs="+", type=Path, help="evaluation or sweep directories (searched for summary.json)")
    ap.add_argument("--out", type=Path, required=True, help="where latency.md/.json/.png go")
    ap.add_argument("--seed", type=int, default=None, help="keep only evaluations whose episode seeds start here")
    args = ap.parse_args(argv)
    try:
        write_latency_report(args.dirs, args.out, args.seed)
    except LatencyReportError as e:
        sys.exit(f"latency_report: error: {e}")
    print((args.out / "latency.md").read_text())
    print(f"latency report: {args.out / 'latency.md'}, {args.out / 'latency.png'}, {args.out / 'latency.json'}")


if __name__ == "__main__":
    main()
