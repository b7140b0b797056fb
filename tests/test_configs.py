"""The one config path (vla.configs): experiment recipes compose alike in convert.py, train.py and eval.py, reach the
run directory and come back in eval.py; group files state only what differs; bad values are one line in every app."""

import dataclasses
import os
import shutil
import subprocess
import sys
import zipfile
from importlib.resources import files
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from vla.configs import (
    CONFIG_MODULE, ConfigError, ConvertConfig, EvalConfig, TrainConfig, check_overrides, compose, group_options,
    load_group, load_recipe, to_object, train_config, with_recorded_recipe,
)
from vla.data.config import TaskConfig

REPO = Path(__file__).resolve().parents[1]
# the SFT recipes (a Q recipe, algo=qchunk, improves one of their policies: train.py only)
EXPERIMENTS = [e for e in group_options("experiment") if e != "maniskill_from_scratch"
               and compose("train", [f"+experiment={e}"]).algo.name == "sft"]
TASKS = ["pushcube", "pullcube", "pickcube", "stackcube", "placesphere", "peginsertionside"]


def test_every_task_has_a_pi05_recipe_and_its_pi0_twin():
    assert sorted(EXPERIMENTS) == sorted(f"{t}_{m}" for t in TASKS for m in ("pi05", "pi0"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_recipe_composes_alike_in_the_three_apps(experiment):
    recipes = {app: load_recipe(experiment, app) for app in ("convert", "train", "eval")}
    assert recipes["train"].experiment == experiment
    for part in ("task", "model", "optim", "data", "augment", "eval", "batch_size", "num_steps"):
        assert getattr(recipes["convert"], part) == getattr(recipes["train"], part) == getattr(recipes["eval"], part)
    r = recipes["train"]
    assert r.model.name == ("pi05_small" if experiment.endswith("pi05") else "pi0_small")
    assert r.task.image_size == r.model.vision.image_size == 128  # nothing resized
    assert r.task.demos.num_demos <= 1000 and r.eval.num_episodes == 100 and r.eval.seed == 100000
    assert r.task.demos.seed + r.task.demos.max_attempts <= r.eval.seed  # no episode starts like a demo
    assert r.task.dataset_root.startswith(f"data/{r.task.name}_128px_")


@pytest.mark.parametrize("task", TASKS)
def test_pi0_twin_differs_from_its_pi05_recipe_only_in_the_model(task):
    pi05, pi0 = load_recipe(f"{task}_pi05"), load_recipe(f"{task}_pi0")
    differ = {f.name for f in dataclasses.fields(TrainConfig) if getattr(pi05, f.name) != getattr(pi0, f.name)}
    assert differ == {"experiment", "model", "run_name"}  # run_name: the experiment's
    assert pi0.model.pi05 is False and pi0.model.vlm == pi05.model.vlm and pi0.model.vision == pi05.model.vision


def test_experiment_names_the_run_and_the_sweep_subdir():
    assert load_recipe("pushcube_pi05").run_name == "pushcube_pi05"
    assert to_object(compose("train", [])).run_name.startswith("pickcube-pi05_tiny-")  # no recipe: task-model-time


def _task_file_keys(name: str) -> dict:
    raw = OmegaConf.to_container(OmegaConf.load(files(CONFIG_MODULE) / "task" / f"{name}.yaml"))
    base = [d for d in raw.pop("defaults") if d not in ("task_schema", "_self_")]
    return raw, base


@pytest.mark.parametrize("name", group_options("task"))
def test_task_file_states_only_what_differs_from_its_base(name):
    raw, base = _task_file_keys(name)
    reference = load_group("task", base[0]) if base else TaskConfig(name="", env_id="", prompt="", max_episode_steps=1)
    same = [k for k, v in raw.items() if k not in ("name",) and getattr(reference, k) == v]
    assert not same, f"{name}.yaml repeats its base's {same}"
    task = load_group("task", name)  # paths derive from the name
    assert task.dataset_root == f"data/maniskill_{name}" and task.demos.out_dir == f"data/demos/{name}"


def test_hardware_files_extend_a_base():
    for name in ("8xa100", "8xh200", "4xh100", "2xh100"):
        raw = OmegaConf.load(files(CONFIG_MODULE) / "hardware" / f"{name}.yaml")
        assert "8xh100" in raw.defaults and load_group("hardware", name).nccl_env == {"NCCL_NVLS_ENABLE": "0"}


def test_overrides_of_parts_an_app_does_not_read_are_refused():
    check_overrides(EvalConfig, ["checkpoint=x", "eval.seed=5", "task.image_size=64", "+experiment=pushcube_pi05"],
                    "eval.py")
    with pytest.raises(ConfigError, match=r"^batch_size=8: batch_size is not read by eval.py"):
        check_overrides(EvalConfig, ["batch_size=8"], "eval.py")
    with pytest.raises(ConfigError, match=r"^optim=adamw_constant: optim is not read by convert.py"):
        check_overrides(ConvertConfig, ["optim=adamw_constant"], "convert.py")
    with pytest.raises(ConfigError, match=r"^eval.seed=3: eval is not read by convert.py"):
        check_overrides(ConvertConfig, ["eval.seed=3"], "convert.py")
    check_overrides(TrainConfig, ["eval.seed=3", "optim.lr=1", "data.use_videos=true"], "train.py")  # records all


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    """A checkpoint's config.yaml as training writes it (the resolved TrainConfig), for a PushCube recipe."""
    cfg = load_recipe("pushcube_pi05")
    path = tmp_path_factory.mktemp("ckpt") / "config.yaml"
    path.write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    return path


def _eval_with(recorded: Path, overrides: list[str], allow_other_task: bool = False) -> EvalConfig:
    cfg = compose("eval", [f"checkpoint={recorded.parent}", *overrides])
    return to_object(with_recorded_recipe(cfg, recorded, overrides, allow_other_task))


def test_eval_takes_the_recorded_recipe_and_the_command_line_on_top(recorded):
    cfg = _eval_with(recorded, [])
    assert (cfg.experiment, cfg.task.name, cfg.model.name) == ("pushcube_pi05", "pushcube", "pi05_small")
    assert (cfg.eval.num_episodes, cfg.eval.seed, cfg.eval.replan_steps) == (100, 100000, 8)
    assert cfg.task.image_size == 128 and cfg.task.state_extra == {}  # replaced, not merged with eval.yaml's pickcube
    cfg = _eval_with(recorded, ["eval.seed=300000", "eval.replan_steps=16", "task.max_episode_steps=20"])
    assert (cfg.eval.seed, cfg.eval.replan_steps, cfg.eval.num_episodes) == (300000, 16, 100)
    assert cfg.task.max_episode_steps == 20 and cfg.task.image_size == 128
    assert _eval_with(recorded, ["task=pushcube"]).task.image_size == 128  # naming the same task changes nothing


def test_eval_refuses_another_task_or_model_than_the_checkpoints(recorded):
    with pytest.raises(ConfigError, match=r"^task=stackcube: .*config.yaml was trained with task pushcube \(pass "
                                          r"allow_other_task=true"):
        _eval_with(recorded, ["task=stackcube"])
    with pytest.raises(ConfigError, match=r"^model=pi05: .* was trained with model pi05_small$"):
        _eval_with(recorded, ["model=pi05"])
    cfg = _eval_with(recorded, ["task=stackcube"], allow_other_task=True)
    assert cfg.task.name == "stackcube" and cfg.eval.replan_steps == 8  # the recorded protocol, the chosen task


def test_values_are_checked_when_the_config_is_built():
    for overrides, message in (
        (["num_steps=-5"], r"^num_steps=-5: must be at least 1$"),
        (["batch_size=0"], r"^batch_size=0: must be positive$"),
        (["optim.schedule=linear"], r"^optim.schedule='linear': expected cosine or constant$"),
        (["optim=adamw_scratch", "num_steps=100"], r"^optim.decay_steps=100: must exceed optim.warmup_steps=300$"),
        (["hardware.precision=fp16"], r"^hardware.precision='fp16': expected fp32 or bf16$"),
        (["task.demos.num_demos=10", "task.demos.max_attempts=5"], r"max_attempts=5: must be >= .*num_demos=10$"),
        (["eval.replan_steps=0"], r"^eval.replan_steps=0: must be at least 1"),
    ):
        with pytest.raises(ConfigError, match=message):
            to_object(compose("train", [*overrides, "run_name=x"]))


def _run(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / script), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, PYTHONPATH=str(REPO)))


@pytest.mark.slow
@pytest.mark.parametrize("script, args, message", [
    ("train.py", ["num_steps=-5"], "train.py: error: num_steps=-5: must be at least 1"),
    ("train.py", ["batch_size=0"], "train.py: error: batch_size=0: must be positive"),
    ("eval.py", ["seed=3"], "eval.py: error: seed=3: seed is not read by eval.py"),
    ("convert.py", ["input=/missing.h5", "output=."], "convert.py: error: /missing.h5: no such file or directory"),
    ("train.py", ["model=pi05"], "train.py: error: model=pi05 (3,353,433,872 parameters) needs at least"),
])
def test_bad_input_is_one_error_line_in_every_app(script, args, message, tmp_path):
    proc = _run(script, *args, cwd=tmp_path)
    lines = [line for line in proc.stderr.splitlines() if line.strip() and "Warning" not in line
             and not line.startswith(" ")]
    assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith(message), proc.stderr[-2000:]
    assert not (tmp_path / "runs" / "pickcube").exists() and not list(tmp_path.glob("runs/*/checkpoints"))


def test_a_q_recipe_takes_the_policy_it_improves_and_refuses_another_task(recorded, tmp_path):
    """+experiment=pushcube_pi05_fql (algo=qchunk) names its run and sets its algorithm; the task, model and evaluation
    protocol are the policy checkpoint's recorded ones, and a policy of another task is refused in one line."""
    ov = ["+experiment=pushcube_pi05_fql", f"checkpoint={recorded.parent}", "algo.actor.alpha=0.1"]
    cfg = train_config(compose("train", ov), ov)
    assert (cfg.experiment, cfg.run_name, cfg.algo.name) == ("pushcube_pi05_fql", "pushcube_pi05_fql", "qchunk")
    assert (cfg.algo.actor.method, cfg.algo.actor.alpha) == ("distill", 0.1)
    assert cfg.algo.data == ["data/rollouts/pushcube_pi05"] and cfg.checkpoint == str(recorded.parent)
    assert (cfg.task.name, cfg.model.name, cfg.eval.replan_steps) == ("pushcube", "pi05_small", 8)
    pick = tmp_path / "pick"
    pick.mkdir()
    (pick / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(load_recipe("pickcube_pi05"))))
    ov = ["+experiment=pushcube_pi05_fql", f"checkpoint={pick}"]
    with pytest.raises(ConfigError, match="recipe for task pushcube, and checkpoint .* trained on task pickcube_wr"):
        train_config(compose("train", ov), ov)


@pytest.mark.slow
def test_a_recipe_reaches_the_run_dir(tmp_path):
    """train.py +experiment=... records the whole recipe (with the command line's changes) in the run's config.yaml,
    where eval.py reads it back: tiny sizes on synthetic data, one step on the CPU."""
    proc = _run("train.py", "+experiment=pickcube_pi05", "model=pi05_tiny", "synthetic_data.enabled=true",
                "synthetic_data.num_tokens=32", "num_steps=1", "batch_size=2", "optim.warmup_steps=0",
                "hardware.num_workers=0", "progress=false", "eval.num_episodes=7", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    recorded = OmegaConf.load(tmp_path / "runs" / "pickcube_pi05" / "checkpoints" / "1" / "config.yaml")
    assert recorded.experiment == "pickcube_pi05" and recorded.task.name == "pickcube_wristcam_rel"
    assert (recorded.eval.replan_steps, recorded.eval.num_episodes) == (16, 7)  # the recipe's, the command line's
    assert recorded.augment.state_noise_dims == list(range(8)) and recorded.task.image_size == 128
    cfg = compose("eval", ["checkpoint=x"])
    cfg = to_object(with_recorded_recipe(cfg, tmp_path / "runs/pickcube_pi05/checkpoints/1/config.yaml", []))
    assert (cfg.eval.replan_steps, cfg.eval.num_episodes, cfg.task.name) == (16, 7, "pickcube_wristcam_rel")


@pytest.mark.slow
def test_an_installed_vla_finds_its_configs(tmp_path):
    """conf/ ships in the wheel as the package vla.conf: an installed (not editable) vla composes its configs."""
    src = tmp_path / "src"  # a copy: building writes build/ and *.egg-info next to the sources
    src.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md", "vla", "conf"):
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy)(REPO / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(src)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("vla-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"vla/conf/train.yaml", "vla/conf/task/pushcube.yaml", "vla/conf/experiment/pushcube_pi05.yaml",
            "vla/conf/benchmark/maniskill3.yaml"} <= names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = "import vla.configs as c; print(c.load_recipe('pushcube_pi05').task.dataset_root, c.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=str(site), PYTHONNOUSERSITE="1"))
    assert out.returncode == 0, out.stderr[-2000:]
    root, module = out.stdout.split()
    assert root == "data/pushcube_128px_1000demos" and module.startswith(str(site))


def test_compose_is_safe_from_several_threads():
    """Hydra's state is global to the process: threads composing at once (the test fixtures generate demos for
    several tasks in threads) must each get their own config."""
    from concurrent.futures import ThreadPoolExecutor

    names = group_options("task") * 3
    with ThreadPoolExecutor(8) as pool:
        tasks = list(pool.map(lambda n: load_group("task", n), names))
    assert [t.name for t in tasks] == names
