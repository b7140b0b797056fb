"""Where the time of a profiled training step goes, read from a torch.profiler Chrome trace:

  python bench/trace_summary.py TRACE.json[.gz] [--steps N]

* per phase of train.py's loop (the `record_function` ranges data / augment / forward / backward / clip_grad_norm /
  optimizer / ema): the host time of the range, and the GPU time of the kernels launched while it was open (a launch
  is matched to its kernel by the trace's correlation id; backward kernels are launched from autograd's thread while
  the main thread's "backward" range is open, so phases are matched by launch time, whatever the thread);
* the GPU's busy time (the union of kernel, copy and memset intervals) against the wall time between the first and
  the last of them, and the largest idle gaps with the phase open on the host when each began;
* the kernels by total time, in broad classes (matmul, attention, NCCL, optimizer, Triton, other).
"""

from __future__ import annotations

import argparse
import bisect
import gzip
import json
from collections import defaultdict
from pathlib import Path

PHASES = ("data", "augment", "forward", "backward", "clip_grad_norm", "optimizer", "ema")
GPU_CATS = ("kernel", "gpu_memcpy", "gpu_memset")


def kernel_class(name: str) -> str:
    n = name.lower()
    if "nccl" in n:
        return "nccl"
    if any(s in n for s in ("flash", "fmha", "sdpa", "attention")):
        return "attention"
    if any(s in n for s in ("gemm", "nvjet", "cutlass", "xmma", "splitk", "cublas")):
        return "matmul"
    if any(s in n for s in ("adam", "multi_tensor", "foreach")):
        return "optimizer/foreach"
    if n.startswith("triton"):
        return "triton (fused elementwise)"
    if "memcpy" in n or "memset" in n:
        return "copy/memset"
    return "other (eager aten)"


def load(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        return json.load(f)["traceEvents"]


def summarize(path: Path, steps: int) -> str:
    events = [e for e in load(path) if e.get("ph") == "X"]
    gpu = [e for e in events if e.get("cat") in GPU_CATS]
    launches = {e["args"]["correlation"]: e["ts"] for e in events  # runtime API (aten, cuBLAS) or driver (Triton)
                if e.get("cat") in ("cuda_runtime", "cuda_driver") and "correlation" in e.get("args", {})}
    ranges = sorted((e["ts"], e["ts"] + e["dur"], e["name"]) for e in events
                    if e.get("cat") == "user_annotation" and e["name"] in PHASES)
    starts = [r[0] for r in ranges]

    def phase_at(ts: float) -> str:
        i = bisect.bisect_right(starts, ts) - 1
        while i >= 0:  # ranges do not nest: the last one that began before ts, if still open
            if ranges[i][0] <= ts <= ranges[i][1]:
                return ranges[i][2]
            if ranges[i][1] < ts:
                break
            i -= 1
        return "(between phases)"

    host = defaultdict(float)
    for t0, t1, name in ranges:
        host[name] += (t1 - t0) / 1e3
    gpu_by_phase, by_kernel = defaultdict(float), defaultdict(lambda: [0.0, 0])
    for e in gpu:
        launch = launches.get(e.get("args", {}).get("correlation"))
        gpu_by_phase[phase_at(launch) if launch is not None else "(unmatched)"] += e["dur"] / 1e3
        k = by_kernel[e["name"]]
        k[0] += e["dur"] / 1e3
        k[1] += 1
    lines = ["| phase | host ms/step | GPU ms/step (kernels launched in it) |", "|---|---|---|"]
    for name in (*PHASES, "(between phases)", "(unmatched)"):
        if host.get(name) or gpu_by_phase.get(name):
            lines.append(f"| {name} | {host.get(name, 0.0) / steps:.1f} | {gpu_by_phase.get(name, 0.0) / steps:.1f} |")
    if not gpu:
        return "\n".join([f"# {path.name}: {steps} step(s), no GPU events", "", *lines])
    # busy = union of GPU intervals; idle gaps between them
    iv = sorted((e["ts"], e["ts"] + e["dur"]) for e in gpu)
    busy, gaps, cur0, cur1 = 0.0, [], iv[0][0], iv[0][1]
    for a, b in iv[1:]:
        if a > cur1:
            busy += cur1 - cur0
            gaps.append((a - cur1, cur1))
            cur0, cur1 = a, b
        else:
            cur1 = max(cur1, b)
    busy += cur1 - cur0
    wall = (iv[-1][1] - iv[0][0]) / 1e3
    lines = [f"# {path.name}: {steps} step(s); per step: GPU wall {wall / steps:.1f} ms, "
             f"busy {busy / 1e3 / steps:.1f} ms "
             f"({100 * busy / 1e3 / wall:.1f}%), {len(gpu) / steps:.0f} GPU ops", "", *lines]
    total_idle = sum(g for g, _ in gaps) / 1e3
    lines += ["", f"GPU idle {total_idle / steps:.1f} ms/step in {len(gaps)} gaps; largest:",
              "| gap ms | host phase when it began |", "|---|---|"]
    for g, at in sorted(gaps, reverse=True)[:12]:
        lines.append(f"| {g / 1e3:.2f} | {phase_at(at)} |")
    classes = defaultdict(float)
    for name, (ms, _) in by_kernel.items():
        classes[kernel_class(name)] += ms
    lines += ["", "| kernel class | ms/step |", "|---|---|"]
    lines += [f"| {c} | {ms / steps:.1f} |" for c, ms in sorted(classes.items(), key=lambda x: -x[1])]
    lines += ["", "| kernel | ms/step | calls/step |", "|---|---|---|"]
    for name, (ms, n) in sorted(by_kernel.items(), key=lambda x: -x[1][0])[:25]:
        lines.append(f"| {name[:110]} | {ms / steps:.2f} | {n / steps:.0f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trace", type=Path)
    ap.add_argument("--steps", type=int, default=1, help="training steps the trace covers (numbers are per step)")
    args = ap.parse_args()
    print(summarize(args.trace, args.steps))


if __name__ == "__main__":
    main()
