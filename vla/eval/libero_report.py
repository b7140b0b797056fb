"""The LIBERO table: our success per suite, with its Wilson interval, beside the published numbers of
conf/benchmark/libero.yaml, then each evaluation's success per task.

Each LIBERO evaluation writes it for itself (`libero.md` in its directory); `python -m vla.eval.libero_report
<eval dirs | sweep dirs ...> --out DIR` writes libero.md and libero.json for several (e.g. the four suites).
A suite evaluated more than once is an error naming the directories (pass only the ones you mean).
"""

from __future__ import annotations

import argparse
import json
from importlib.resources import files
from pathlib import Path

from vla.configs import CONFIG_MODULE
from vla.eval.benchmark import BenchmarkError, load_spec, wilson_interval
from vla.eval.report import summary_files

LIBERO_SPEC = Path(str(files(CONFIG_MODULE) / "benchmark" / "libero.yaml"))


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.1f}"


def suite_rows(summaries: list[dict], spec_path: Path = LIBERO_SPEC) -> list[dict]:
    """One row per suite: the spec's suites in order (evaluated or not), then any other evaluated suite."""
    spec = load_spec(spec_path)
    by_suite: dict[str, dict] = {}
    for s in summaries:
        if s["env_id"] in by_suite:
            raise BenchmarkError(f"{s['env_id']} was evaluated more than once ({by_suite[s['env_id']].get('dir')}, "
                                 f"{s.get('dir')}): pass only the evaluations to report")
        by_suite[s["env_id"]] = s
    order = [t.env_id for t in spec.tasks] + [k for k in by_suite if k not in {t.env_id for t in spec.tasks}]
    targets = {t.env_id: t.target for t in spec.tasks}
    rows = []
    for suite in order:
        s = by_suite.get(suite)
        row = {"suite": suite, "target": targets.get(suite),
               "published": {a.short: a.success.get(suite) for a in spec.anchors}}
        if s is not None:
            k, n = s["successes_once"], s["episodes"]
            low, high = wilson_interval(k, n, spec.confidence)
            row.update(ours=100 * k / n, successes=k, episodes=n, low=100 * low, high=100 * high,
                       tasks=len(s.get("per_task", [])), model=s.get("model"), checkpoint=s.get("checkpoint"))
        rows.append(row)
    return rows


def suite_markdown(summaries: list[dict], spec_path: Path = LIBERO_SPEC) -> str:
    spec = load_spec(spec_path)
    rows = suite_rows(summaries, spec_path)
    anchors = [a.short for a in spec.anchors]
    level = f"{100 * spec.confidence:.0f}%"
    lines = [f"# {spec.name}", "", f"| suite | ours (%) | {level} interval | episodes | " +
             " | ".join(f"{a} (%)" for a in anchors) + " |", "|---" * (4 + len(anchors)) + "|"]
    for r in rows:
        ours = f"{r['ours']:.1f}" if "ours" in r else "not evaluated"
        interval = f"{r['low']:.1f}–{r['high']:.1f}" if "ours" in r else ""
        episodes = f"{r['successes']}/{r['episodes']} over {r['tasks']} tasks" if "ours" in r else ""
        lines.append(f"| {r['suite']} | {ours} | {interval} | {episodes} | " +
                     " | ".join(_pct(r["published"][a]) for a in anchors) + " |")
    standard = [r for r in rows if r["target"] is not None]
    if all("ours" in r for r in standard):
        mean = sum(r["ours"] for r in standard) / len(standard)
        published = [[r["published"][a] for r in standard] for a in anchors]
        lines.append(f"| average of the {len(standard)} | {mean:.1f} | | | " + " | ".join(
            _pct(sum(p) / len(p)) if None not in p else "–" for p in published) + " |")
    lines += ["", "Published numbers: " + "; ".join(f"{a.short}: {a.citation.strip()} ({a.source})"
                                                     for a in spec.anchors)]
    for s in summaries:
        lines += ["", f"## {s['env_id']}: {s.get('model')} {s.get('checkpoint') or ''}".rstrip(), "",
                  "| task | prompt | success |", "|---|---|---|"]
        lines += [f"| {t['task_id']} | {t['prompt']} | {100 * t['rate']:.0f}% ({t['successes']}/{t['episodes']}) |"
                  for t in s.get("per_task", [])]
    return "\n".join(lines) + "\n"


def collect_libero(dirs: list[Path]) -> list[dict]:
    summaries = []
    for d in dirs:
        for f in summary_files(d):
            s = json.loads(f.read_text())
            if s.get("backend") == "libero":
                summaries.append(dict(s, dir=str(f.parent)))
    if not summaries:
        raise FileNotFoundError(f"no LIBERO summary.json under {', '.join(map(str, dirs))}")
    return summaries


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m vla.eval.libero_report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dirs", nargs="+", type=Path, help="evaluation directories (searched for summary.json)")
    ap.add_argument("--out", type=Path, default=Path("."), help="where libero.md and libero.json go")
    ap.add_argument("--spec", type=Path, default=LIBERO_SPEC, help="suites and published numbers")
    args = ap.parse_args(argv)
    summaries = collect_libero(args.dirs)
    text = suite_markdown(summaries, args.spec)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "libero.md").write_text(text)
    (args.out / "libero.json").write_text(json.dumps(suite_rows(summaries, args.spec), indent=1))
    print(text)


if __name__ == "__main__":
    main()
