"""train.py on real converted ManiSkill demos with the tiny model on CPU: FSDP on 2 gloo ranks vs 1 rank, exact
resume after a kill, TensorBoard scalars, a -m sweep, NaN stop, LoRA, and a short overfit."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from omegaconf import OmegaConf
from safetensors.torch import load_file
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointWrapper
from torch.distributed.device_mesh import init_device_mesh

from tests.models.helpers import randomized_policy
from tests.train.helpers import FAST, compose_train, data_overrides, losses
from vla.configs import TrainConfig
from vla.models import build_policy
from vla.models import weights as W
from vla.models.lora import LORA_TARGETS
from vla.models.weights import openpi_key, save_openpi
from vla.train.checkpoint import checkpoint_steps
from vla.train.launch import launch
from vla.train.loop import TrainingError, train
from vla.train.parallel import parallelize
from vla.runs import read_metrics

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def cli(args: list[str], cwd: Path, **kw) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    return subprocess.Popen([sys.executable, str(REPO / "train.py"), *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def test_two_fsdp_ranks_and_accumulation_match_one_rank(datasets, tmp_path):
    """Same global batch of 8: 1 rank x 8, 1 rank x 2 x 4 accumulation steps, 2 gloo FSDP ranks x 4 (launched by
    train.py itself). Augmentation on: its draws are per global-batch position, so all three see the same inputs."""
    base = FAST + data_overrides(datasets["pickcube"]) + ["num_steps=4"]
    train(compose_train(base), tmp_path / "one")
    train(compose_train(base + ["hardware.micro_batch_size=2"]), tmp_path / "accum")
    launch(compose_train(base + ["hardware.num_processes=2"]), tmp_path / "two")
    one, accum, two = losses(tmp_path / "one"), losses(tmp_path / "accum"), losses(tmp_path / "two")
    norms = [m["train/param_norm"] for m in read_metrics(tmp_path / "one")]
    assert len(one) == 4 and abs(norms[-1] - norms[0]) > 1e-3  # the weights moved: later steps check the updates
    # float reduction order differs (gradient sums across ranks / micro-steps): agreement to ~1e-6 relative
    torch.testing.assert_close(torch.tensor(two), torch.tensor(one), rtol=2e-5, atol=0)
    torch.testing.assert_close(torch.tensor(accum), torch.tensor(one), rtol=2e-5, atol=0)
    w_one = load_file(tmp_path / "one" / "checkpoints" / "4" / "model.safetensors")
    w_two = load_file(tmp_path / "two" / "checkpoints" / "4" / "model.safetensors")
    for k in w_one:
        torch.testing.assert_close(w_two[k], w_one[k], rtol=1e-4, atol=1e-6)


def test_killed_run_resumes_exactly(datasets, tmp_path):
    """SIGKILL a CLI run right after its first checkpoint; `resume=true` continues from it and the loss curve is
    bitwise that of an uninterrupted run (CPU, deterministic data order, noise and augmentation)."""
    args = FAST + data_overrides(datasets["pickcube"]) + ["num_steps=40", "save_interval=4", "keep_last=2",
                                                          "keep_period=null"]
    ref = cli(args + ["run_name=ref"], tmp_path)
    out, _ = ref.communicate(timeout=600)
    assert ref.returncode == 0, out

    run = cli(args + ["run_name=killed"], tmp_path)
    run_dir = tmp_path / "runs" / "killed"
    deadline = time.time() + 600
    while not checkpoint_steps(run_dir) and run.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    run.send_signal(signal.SIGKILL)
    run.communicate()
    assert run.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    killed_at = checkpoint_steps(run_dir)[-1]
    assert killed_at < 40

    resumed = cli(args + ["run_name=killed", "resume=true"], tmp_path)
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out
    assert f"resumed from {run_dir / 'checkpoints' / str(killed_at)}" in out
    curve = {}
    for m in read_metrics(run_dir):  # the killed run may have logged steps past its checkpoint: the resumed run's count
        curve[m["step"]] = m["train/loss"]
    assert curve == {m["step"]: m["train/loss"] for m in read_metrics(tmp_path / "runs" / "ref")}
    assert checkpoint_steps(run_dir) == [36, 40]  # keep_last=2
    assert not list((run_dir / "checkpoints").glob(".tmp-*"))


def test_sigterm_saves_the_current_step_and_resumes(datasets, tmp_path):
    """SIGTERM to the whole process group (what `timeout` and schedulers send), loader workers included: the run
    finishes its step, saves it although no periodic save is due, exits 143, and `resume=true` continues from it."""
    args = FAST + data_overrides(datasets["pickcube"]) + ["hardware.num_workers=1", "save_interval=1000",
                                                          "keep_period=null", "run_name=term"]
    run = cli(args + ["num_steps=100000"], tmp_path, start_new_session=True)
    run_dir = tmp_path / "runs" / "term"
    deadline = time.time() + 600
    while len(read_metrics(run_dir) if (run_dir / "metrics.jsonl").is_file() else []) < 2 and run.poll() is None \
            and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(run.pid, signal.SIGTERM)
    out, _ = run.communicate(timeout=300)
    assert run.returncode == 143, out
    steps = checkpoint_steps(run_dir)
    assert len(steps) == 1 and 2 <= steps[0] < 100000, out
    assert f"stopped by SIGTERM after step {steps[0]} of 100000" in out
    assert read_metrics(run_dir)[-1]["step"] == steps[0]  # the stop step was logged too

    resumed = cli(args + [f"num_steps={steps[0] + 2}", "resume=true"], tmp_path)
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out
    assert f"resumed from {run_dir / 'checkpoints' / str(steps[0])}" in out
    assert checkpoint_steps(run_dir)[-1] == steps[0] + 2


def parallelized_on_meta(cfg: TrainConfig):
    """The policy of `cfg`, built on the meta device and wrapped by `parallelize` on a one-rank gloo group: what the
    hardware settings did to its modules, without allocating or training it."""
    with torch.device("meta"):
        policy = build_policy(cfg.model)
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        parallelize(policy, cfg.hardware, init_device_mesh("cpu", (1,)))
    finally:
        dist.destroy_process_group()
    return policy


def test_compiled_vision_layers_train_as_eager(datasets, tmp_path):
    """hardware.compile_vision compiles each SigLIP encoder layer in place: same parameter names, and the same losses
    as eager (fp32 on the CPU) over steps that move the weights."""
    base = FAST + data_overrides(datasets["pickcube"]) + ["num_steps=3", "save_interval=null"]
    cfg = compose_train(base + ["hardware.compile_vision=true"])
    policy = parallelized_on_meta(cfg)
    vision_layers = policy.image_encoder.encoder_layers
    assert all(layer._compiled_call_impl is not None for layer in vision_layers)
    eager = train(compose_train(base), tmp_path / "eager")
    compiled = train(cfg, tmp_path / "compiled")
    assert compiled["train/param_norm"] == pytest.approx(eager["train/param_norm"], rel=1e-6)
    torch.testing.assert_close(torch.tensor(losses(tmp_path / "compiled")), torch.tensor(losses(tmp_path / "eager")),
                               rtol=1e-5, atol=0)


def test_activation_checkpointing_trains_as_without(datasets, tmp_path):
    """hardware.activation_checkpointing (the one-GPU configs' setting) recomputes each joint layer (an FSDP unit) and
    each SigLIP layer (transformers' own checkpointing) in the backward: the same losses and weights (fp32 on the CPU)
    over steps that move the weights."""
    base = FAST + data_overrides(datasets["pickcube"]) + ["num_steps=3", "save_interval=null"]
    cfg = compose_train(base + ["hardware.activation_checkpointing=true"])
    policy = parallelized_on_meta(cfg)
    assert all(isinstance(layer, CheckpointWrapper) for layer in policy.transformer.layers)
    assert policy.image_encoder.tower.is_gradient_checkpointing
    plain = train(compose_train(base), tmp_path / "plain")
    recomputed = train(cfg, tmp_path / "ac")
    assert recomputed["train/param_norm"] == pytest.approx(plain["train/param_norm"], rel=1e-6)
    torch.testing.assert_close(torch.tensor(losses(tmp_path / "ac")), torch.tensor(losses(tmp_path / "plain")),
                               rtol=1e-6, atol=0)


def test_tensorboard_scalars_and_checkpoint_contents(datasets, tasks, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = compose_train(FAST + data_overrides(datasets["pickcube"]) + ["num_steps=3"])
    train(cfg, tmp_path)
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for tag in ("train/loss", "train/grad_norm", "train/param_norm", "train/lr", "perf/samples_per_s",
                "perf/step_time_s", "perf/peak_memory_gb"):
        assert tag in tags, tag
    tb_loss = [e.value for e in acc.Scalars("train/loss")]
    torch.testing.assert_close(torch.tensor(tb_loss), torch.tensor(losses(tmp_path)))
    ckpt = tmp_path / "checkpoints" / "3"
    for name in ("model.safetensors", "ema.safetensors", "norm_stats.json", "tokenizer.model", "config.yaml",
                 "state/.metadata", "state/train_state.pt"):
        assert (ckpt / name).is_file(), name
    # the consolidated weights are in openpi's layout and load into a fresh policy; EMA differs from the raw weights
    raw, ema = load_file(ckpt / "model.safetensors"), load_file(ckpt / "ema.safetensors")
    policy = build_policy(cfg.model)
    assert set(raw) == {openpi_key(k) for k in policy.state_dict()}
    assert any(not torch.equal(raw[k], ema[k]) for k in raw)
    assert OmegaConf.load(ckpt / "config.yaml").model.name == "pi05_tiny"


def test_multirun_sweep_makes_one_run_per_task(datasets, tmp_path):
    # tasks' own dataset_root (data/maniskill_<task>) resolved against the working directory
    (tmp_path / "data").mkdir()
    for name, path in datasets.items():
        (tmp_path / "data" / f"maniskill_{name}").symlink_to(path)
    proc = cli(["-m", "task=pickcube,stackcube", "num_steps=2", *FAST], tmp_path)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    runs = sorted(p for p in (tmp_path / "runs").glob("multirun-*/*") if p.is_dir())
    assert [r.name for r in runs] == ["0-pickcube-pi05_tiny", "1-stackcube-pi05_tiny"]
    for r in runs:
        assert len(read_metrics(r)) == 2 and checkpoint_steps(r) == [2]
        assert OmegaConf.load(r / "config.yaml").task.name in r.name


def test_dataset_of_another_state_layout_is_refused(datasets, tmp_path):
    """PickCube's state carries the hidden goal (11 dims); a dataset converted with 8 is refused in one line."""
    with pytest.raises(ValueError, match=r"feature 'state' has shape \(8,\), task pickcube expects \(11,\)"):
        train(compose_train(FAST + data_overrides(datasets["stackcube"]) + ["num_steps=1"]), tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_non_finite_loss_stops_with_the_step_and_saves_nothing_bad(datasets, tmp_path):
    cfg = compose_train(FAST + data_overrides(datasets["pickcube"]) +
                        ["num_steps=20", "save_interval=1", "optim.lr=1e30", "optim.clip_grad_norm=1e30"])
    with pytest.raises(TrainingError, match=r"non-finite loss or gradient at step (\d+)") as err:
        train(cfg, tmp_path)
    bad_step = int(err.value.args[0].split("at step ")[1].split()[0])
    assert checkpoint_steps(tmp_path) and max(checkpoint_steps(tmp_path)) < bad_step
    for step in checkpoint_steps(tmp_path):
        weights = load_file(tmp_path / "checkpoints" / str(step) / "model.safetensors")
        assert all(torch.isfinite(v).all() for v in weights.values())


def test_lora_trains_only_adapters_siglip_and_projections(datasets, tmp_path):
    # LoRA fine-tunes pretrained weights (from scratch, the zero-initialised adaRMS gates would stay frozen at 0):
    # a tiny "pretrained" checkpoint with every weight random
    pretrained = randomized_policy("pi05_tiny")
    save_openpi(pretrained.state_dict(), tmp_path / "model.safetensors")
    cfg = compose_train(FAST + data_overrides(datasets["pickcube"]) +
                        ["num_steps=2", "lora.enabled=true", f"model.pretrained={tmp_path}"])
    train(cfg, tmp_path / "run")
    init = load_file(tmp_path / "model.safetensors")
    trained = load_file(tmp_path / "run" / "checkpoints" / "2" / "model.safetensors")  # adapters merged
    changed = {k for k in init if not torch.equal(init[k], trained[k])}
    assert any("vision_tower" in k for k in changed) and "action_in_proj.weight" in changed
    gemma = [k for k in init if k.startswith((W.PALI + "language_model.", W.EXPERT))]
    frozen = [k for k in gemma if not any(f"{t}.weight" in k for t in LORA_TARGETS)]  # embedding, norms, adaRMS
    assert frozen and not (changed & set(frozen))  # Gemma's own non-LoRA weights stay as they were
    assert any("self_attn.q_proj" in k for k in changed)  # ... while the adapters changed the merged projections


def test_tiny_model_overfits_a_few_real_demos(datasets, tmp_path):
    """Loss falls by 10x on two PickCube demos (no augmentation, constant LR)."""
    cfg = compose_train(data_overrides(datasets["pickcube"]) + [
        "hardware.num_workers=0", "progress=false", "batch_size=16", "num_steps=300", "log_interval=25",
        "save_interval=1000", "optim.lr=3e-3", "optim.schedule=constant", "optim.warmup_steps=20",
        "optim.ema_decay=null", "use_augmentation=false",
    ])
    train(cfg, tmp_path)
    curve = losses(tmp_path)
    assert curve[-1] < curve[0] / 10, curve


def test_resume_with_another_layout_and_no_silent_restart(datasets, tmp_path):
    """The data position is kept in global samples: a run resumed with half the micro-batch (2 accumulation steps)
    continues the same curve. Starting again over existing checkpoints without resume=true is refused."""
    base = FAST + data_overrides(datasets["pickcube"]) + ["save_interval=3"]
    train(compose_train(base + ["num_steps=6"]), tmp_path / "ref")
    train(compose_train(base + ["num_steps=3"]), tmp_path / "run")
    with pytest.raises(ValueError, match=r"already holds checkpoints \[3\]: pass resume=true"):
        train(compose_train(base + ["num_steps=6"]), tmp_path / "run")
    train(compose_train(base + ["num_steps=6", "resume=true", "hardware.micro_batch_size=4"]), tmp_path / "run")
    torch.testing.assert_close(torch.tensor(losses(tmp_path / "run")), torch.tensor(losses(tmp_path / "ref")),
                               rtol=2e-5, atol=0)
