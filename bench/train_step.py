"""Training throughput of the real train loop (train.py's code: FSDP2 wrapping, bf16 compute over fp32 master weights,
fused AdamW, EMA, augmentation) on synthetic batches of the real shapes, one setting after another:

  python bench/train_step.py --model pi05 --batch 8 16 32 --ac on off --compile off [on all] [--steps 12] [--ema on]
                             [--profile DIR]
  torchrun --standalone --nproc_per_node N bench/train_step.py --hardware 2xh100 ...   (FSDP over N GPUs)

--batch is per GPU (the global batch is N times it); samples/s are the whole job's, TFLOP/s and MFU per GPU.
--memory-cap-gib G limits PyTorch's allocator to G GiB per GPU (torch.cuda.set_per_process_memory_fraction), so that a
larger card (H200, 140 GiB) shows whether a setting fits a smaller one (H100 80GB: 79.6 GiB in all, of which the CUDA
context and NCCL take some outside the allocator); "device used" is then the card's whole use after the run
(torch.cuda.mem_get_info: the allocator's reserved pool plus everything outside it).

Each setting runs `steps` optimizer steps; the numbers are those of the second half (after warm-up, compilation and
the allocator's growth). MFU = model FLOPs / (step time x peak bf16 FLOP/s), model FLOPs = 3 x forward matmul FLOPs
(forward + backward; activation recomputation not counted), forward FLOPs counted per sample by `forward_flops`.
--profile DIR: two steps of each setting, just before the timed second half, are recorded with torch.profiler:
DIR/<setting>.json.gz (Chrome trace) and
DIR/<setting>.md (`trace_summary.py`: GPU time per phase of the step, GPU idle gaps, kernels by time).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist

from vla.configs import compose, to_object
from vla.models.config import PolicyConfig
from vla.runs import read_metrics
from vla.train.loop import train

PROFILED_STEPS = 2
RANK, WORLD = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))  # set by torchrun

PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense bf16 tensor-core FLOP/s, datasheets


def forward_flops(cfg: PolicyConfig, cameras: int, prompt_len: int) -> float:
    """Matmul FLOPs (2 per multiply-add) of one sample's training forward as our implementation computes it:
    SigLIP on each visible camera, the VLM on the prefix (its last layer only K/V), the expert on the H action tokens,
    attention over the full [prefix | suffix] sequence (SDPA computes masked scores too)."""
    v, e0, e1 = cfg.vision, cfg.vlm, cfg.expert
    patches = (v.image_size // v.patch_size) ** 2
    vis_layer = 4 * v.width**2 + 2 * v.width * v.mlp_dim
    siglip = patches * (3 * v.patch_size**2 * v.width + v.depth * vis_layer + v.width * e0.width)
    siglip += v.depth * 2 * patches * patches * v.width  # QK^T and PV
    siglip *= cameras
    Tp = cameras * patches + prompt_len
    Ts = cfg.action_horizon + (0 if cfg.pi05 else 1)
    T = Tp + Ts
    qo = lambda d: 2 * d * e0.num_heads * e0.head_dim  # noqa: E731
    kv = lambda d: 2 * d * e0.num_kv_heads * e0.head_dim  # noqa: E731
    vlm_layer = qo(e0.width) + kv(e0.width) + 3 * e0.width * e0.mlp_dim
    exp_layer = qo(e1.width) + kv(e1.width) + 3 * e1.width * e1.mlp_dim
    attn = 2 * e0.num_heads * e0.head_dim  # QK^T + PV per (query, key) pair
    vlm = Tp * ((e0.depth - 1) * vlm_layer + kv(e0.width)) + (e0.depth - 1) * Tp * T * attn
    expert = Ts * e1.depth * exp_layer + e1.depth * Ts * T * attn
    return 2.0 * (siglip + vlm + expert)


def profiled(steps: int, trace: Path):
    """A profiler that records PROFILED_STEPS optimizer steps ending with step steps // 2 (the last of the untimed
    first half: the timed steps stay unprofiled) into `trace`, stepped by a global optimizer-step hook (torch's public
    API), so the train loop runs exactly as in train.py."""
    from torch.optim.optimizer import register_optimizer_step_post_hook
    from torch.profiler import ProfilerActivity, profile, schedule

    def write(prof):
        trace.parent.mkdir(parents=True, exist_ok=True)
        prof.export_chrome_trace(str(trace))

    prof = profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], on_trace_ready=write,
                   schedule=schedule(wait=steps // 2 - PROFILED_STEPS - 1, warmup=1, active=PROFILED_STEPS, repeat=1))
    hook = register_optimizer_step_post_hook(lambda *args: prof.step())
    return prof, hook


def run(model: str, batch: int, ac: bool, compile_: str, ema: bool, steps: int, precision: str,
        hardware: str = "1xgpu", profile_dir: Path | None = None, extra: list[str] = ()) -> dict:
    torch._dynamo.reset()  # each setting compiles afresh: a second batch size would otherwise recompile as dynamic
    overrides = [
        f"model={model}", f"hardware={hardware}", f"hardware.activation_checkpointing={ac}",
        f"hardware.compile={compile_ != 'off'}", f"hardware.compile_vision={compile_ == 'all'}",
        f"hardware.precision={precision}", "synthetic_data.enabled=true",
        "synthetic_data.num_tokens=${model.max_token_len}", f"batch_size={batch * WORLD}", f"num_steps={steps}",
        f"log_interval={steps // 2}", "save_interval=null", "progress=false", "run_name=bench", "hardware.num_workers=4",
        *([] if ema else ["optim.ema_decay=null"]), *extra,
    ]
    cfg = to_object(compose("train", overrides))
    tag = f"b{batch}_ac{'on' if ac else 'off'}_compile{compile_}" + "".join(f"_{e}" for e in extra)
    tag = "".join(c if c.isalnum() or c in "._-" else "-" for c in tag)  # a plain file name
    trace = profile_dir / f"{tag}.json.gz" if profile_dir and RANK == 0 else None
    prof, hook = profiled(steps, trace) if trace else (None, None)
    with tempfile.TemporaryDirectory() as d:
        try:
            if prof:
                with prof:
                    train(cfg, d)
            else:
                train(cfg, d)
            last = read_metrics(d)[-1] if RANK == 0 else {}  # rank 0 logs
        except torch.OutOfMemoryError:
            last = None
        finally:
            if hook:
                hook.remove()
    if trace and trace.is_file():
        from trace_summary import summarize

        (profile_dir / f"{tag}.md").write_text(summarize(trace, PROFILED_STEPS) + "\n")
        print(f"profile: {profile_dir / (tag + '.md')}", flush=True)
    gc.collect()
    device_used = None
    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()  # before empty_cache: the pool still holds the run's peak reservation
        device_used = (total - free) / 2**30
        torch.cuda.empty_cache()
    row = {"model": model, "batch": batch, "gpus": WORLD, "ac": ac, "compile": compile_, "ema": ema,
           "precision": precision, "overrides": list(extra)}
    if last is None:
        return {**row, "result": "out of memory"}
    name = torch.cuda.get_device_name() if cfg.hardware.device == "cuda" else "cpu"
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    if RANK != 0:
        return row
    flops = 3 * forward_flops(cfg.model, len(cfg.synthetic_data.cameras), cfg.model.max_token_len) * batch  # per GPU
    return {
        **row, "samples_per_s": last["perf/samples_per_s"], "step_s": last["perf/step_time_s"],
        "peak_mem_gb": last["perf/peak_memory_gb"], "tflops_per_s": flops / last["perf/step_time_s"] / 1e12,
        "mfu": flops / last["perf/step_time_s"] / peak if peak else None, "device": name,
        "device_used_gib": device_used,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="pi05")
    ap.add_argument("--batch", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument("--ac", nargs="+", default=["on"], choices=["on", "off"])
    ap.add_argument("--compile", nargs="+", default=["off"], choices=["on", "off", "all"],
                    help="on: the joint layers; all: the SigLIP layers too")
    ap.add_argument("--ema", default="on", choices=["on", "off"])
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--hardware", default="1xgpu", help="conf/hardware name (cpu: a quick check of the script)")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    ap.add_argument("--profile", type=Path, default=None, help="trace two steps of each setting into this folder")
    ap.add_argument("--set", nargs="*", default=[], help="train.py overrides for every setting, e.g. hardware.x=y")
    ap.add_argument("--memory-cap-gib", type=float, default=None,
                    help="limit the allocator to this many GiB per GPU (does a setting fit a smaller card?)")
    args = ap.parse_args()
    if args.memory_cap_gib and torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", 0))
        total = torch.cuda.get_device_properties(local).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.memory_cap_gib * 2**30 / total), local)
    if args.profile and args.steps // 2 < PROFILED_STEPS + 2:
        ap.error(f"--profile needs --steps >= {2 * (PROFILED_STEPS + 2)}: the profiled steps precede the timed half")
    if "RANK" in os.environ:  # one process group for every setting: train() joins it and leaves it up
        if args.hardware != "cpu":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
            dist.init_process_group("nccl", device_id=torch.device("cuda", torch.cuda.current_device()))
        else:
            dist.init_process_group("gloo")
    try:
        rows = run_all(args)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if RANK != 0:
        return
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))
    print_table(rows)


def run_all(args) -> list[dict]:
    rows = []
    for comp in args.compile:
        for ac in args.ac:
            for b in args.batch:
                row = run(args.model, b, ac == "on", comp, args.ema == "on", args.steps, args.precision,
                          args.hardware, args.profile, args.set)
                rows.append(row)
                if RANK == 0:
                    print(json.dumps(row), flush=True)
    return rows


def print_table(rows: list[dict]) -> None:
    print("\n| GPUs | batch per GPU | act. ckpt | compile | EMA | samples/s | step (s) | TFLOP/s per GPU | MFU | "
          "peak mem (GiB) | device used (GiB) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        head = f"| {r['gpus']} | {r['batch']} | {r['ac']} | {r['compile']} | {r['ema']} |"
        if "samples_per_s" not in r:
            print(f"{head} {r['result']} | | | | | |")
            continue
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] else "-"
        used = f"{r['device_used_gib']:.1f}" if r["device_used_gib"] is not None else "-"
        print(f"{head} {r['samples_per_s']:.1f} | {r['step_s']:.3f} | {r['tflops_per_s']:.0f} | {mfu} | "
              f"{r['peak_mem_gb']:.1f} | {used} |")


if __name__ == "__main__":
    main()
