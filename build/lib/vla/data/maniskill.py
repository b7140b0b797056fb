"""ManiSkill3 demonstrations: generation with ManiSkill's own tools, and validated reading of its HDF5 + JSON files.

Generation, per env seed, in a pool of worker processes:
  1. ManiSkill's motion-planning solution (`mani_skill.examples.motionplanning.panda`) in a `pd_joint_pos` env wrapped
     in ManiSkill's `RecordEpisode`; failed plans are dropped.
  2. ManiSkill's trajectory replay (`mani_skill.trajectory.replay_trajectory`) to the task's control mode
     (pd_ee_delta_pose) with RGB observations; replays that do not end in success are dropped.
The replay tool has no resolution option: it re-creates the env from the `env_kwargs` recorded in the JSON, so the
planning env is created with `sensor_configs=dict(width=S, height=S, shader_pack=...)` and the replay inherits them.
Seeds are tried in order and the first `num_demos` seeds that survive both steps are kept, so the output does not
depend on the number of workers. With `task.demos.replay=False` step 2 is skipped and the successful plans are written
as `<env_id>.planned.h5`, to be replayed elsewhere with the same ManiSkill tool (tools/remote_gpu/demos.sh).

Reading (`read_episodes`) validates everything cheap up front (keys, shapes, dtypes, lengths, finite values, control
mode, env id) and raises `DataError` with one line naming file / episode / key / expected vs found.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import multiprocessing as mp
import operator
import os
import shutil
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from vla.data.config import TaskConfig
from vla.data.schema import DATASET_IMAGE_KEYS, camera_for

log = logging.getLogger(__name__)


class DataError(Exception):
    """Bad ManiSkill input; the message is one line: `<file>: <episode>: <key>: expected ..., found ...`."""


class GenerationError(RuntimeError):
    pass


# ----------------------------------------------------------------------------------------------------------------
# generation


@dataclass
class DemoResult:
    seed: int
    planned: bool
    replayed: bool
    steps: int  # replayed episode length (env steps)
    plan_s: float
    replay_s: float
    path: str | None  # replayed single-episode .h5 (in the work dir)
    error: str | None = None


@dataclass
class GenerationReport:
    path: Path  # merged .h5 (its .json next to it)
    num_demos: int
    seeds_tried: int
    plan_failures: int
    replay_failures: int
    plan_s: float  # mean per planned episode (successful or not)
    replay_s: float  # mean per replayed episode
    wall_s: float
    lengths: list[int]


def planned_name(stem: str) -> str:
    return f"{stem}.planned.h5"


def replayed_name(task: TaskConfig, stem: str) -> str:
    # replay_trajectory names its output <stem>.<obs_mode>.<control_mode>.<sim_backend>.h5
    return f"{stem}.rgb.{task.control_mode}.{task.sim_backend}.h5"


def quiet_worker() -> None:
    # Replay prints a progress bar per episode and ManiSkill warns about the missing CUDA renderer on every env
    # creation; the parent shows one progress bar instead. Errors come back in DemoResult.error.
    devnull = open(os.devnull, "w")
    os.dup2(devnull.fileno(), 1)
    os.dup2(devnull.fileno(), 2)
    logging.getLogger("mani_skill").setLevel(logging.ERROR)


def _demo_worker(args: tuple[TaskConfig, int, str]) -> DemoResult:
    """Plan and replay one seed; runs in a spawned worker process."""
    task, seed, work_dir = args
    import gymnasium as gym

    import mani_skill.envs  # noqa: F401  (registers the envs)
    from mani_skill.examples.motionplanning.panda.run import MP_SOLUTIONS
    from mani_skill.trajectory import replay_trajectory
    from mani_skill.utils.wrappers.record import RecordEpisode

    stem = f"seed{seed}"
    t0 = time.perf_counter()
    try:
        env = gym.make(
            task.env_id,
            obs_mode="none",
            control_mode="pd_joint_pos",  # the motion planners command joint positions
            sim_backend=task.sim_backend,
            **robot_kwargs(task),
            sensor_configs=dict(shader_pack=task.shader, width=task.image_size, height=task.image_size),
        )
        env = RecordEpisode(
            env,
            output_dir=work_dir,
            trajectory_name=stem,
            save_video=False,
            source_type="motionplanning",
            source_desc="ManiSkill motion planning solution (vla.data.maniskill)",
            record_reward=False,
            save_on_reset=False,
        )
        try:
            res = MP_SOLUTIONS[task.env_id](env, seed=seed, debug=False, vis=False)
        except Exception:  # the solutions raise on unreachable poses; that is a failed plan, not a crash
            res = -1
        planned = res != -1 and bool(res[-1]["success"].item())
        env.flush_trajectory(save=planned)
        env.close()
    except Exception:
        return DemoResult(seed, False, False, 0, time.perf_counter() - t0, 0.0, None, traceback.format_exc())
    plan_s = time.perf_counter() - t0
    if not planned:
        return DemoResult(seed, False, False, 0, plan_s, 0.0, None)
    raw = Path(work_dir) / f"{stem}.h5"
    if not task.demos.replay:  # plan-only: the recorded pd_joint_pos episode is the result
        steps = json.loads(raw.with_suffix(".json").read_text())["episodes"][0]["elapsed_steps"]
        return DemoResult(seed, True, False, int(steps), plan_s, 0.0, str(raw))

    t0 = time.perf_counter()
    try:
        args_ = replay_trajectory.Args(
            traj_path=str(raw),
            sim_backend=task.sim_backend,
            obs_mode="rgb",
            target_control_mode=task.control_mode,
            save_traj=True,
            num_envs=1,
        )
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            replay_trajectory.main(args_)
    except Exception:
        return DemoResult(seed, True, False, 0, plan_s, time.perf_counter() - t0, None, traceback.format_exc())
    replay_s = time.perf_counter() - t0
    out = Path(work_dir) / replayed_name(task, stem)
    episodes = json.loads(out.with_suffix(".json").read_text())["episodes"] if out.exists() else []
    if len(episodes) != 1:  # replay saves only episodes that end in success
        return DemoResult(seed, True, False, 0, plan_s, replay_s, None)
    return DemoResult(seed, True, True, int(episodes[0]["elapsed_steps"]), plan_s, replay_s, str(out))


def generate_demos(task: TaskConfig, out_dir: str | Path, num_demos: int | None = None, progress: bool = True) -> GenerationReport:
    """Generate `num_demos` successful demos of `task` into `out_dir/<env_id>.rgb.<control_mode>.<backend>.h5`
    (with `task.demos.replay=False`: `out_dir/<env_id>.planned.h5`, the successful motion plans, not yet replayed).

    Writes nothing but that .h5/.json pair (atomically); the per-seed files live in a temporary work dir.
    """
    from mani_skill.trajectory.merge_trajectory import merge_trajectories
    from tqdm import tqdm

    cfg = task.demos
    num_demos = cfg.num_demos if num_demos is None else num_demos
    if num_demos < 1:
        raise ValueError(f"num_demos must be >= 1, got {num_demos}")
    if cfg.max_attempts < num_demos:  # would fail only after every seed had been planned and rendered
        raise GenerationError(f"{task.env_id}: demos.max_attempts={cfg.max_attempts} < num_demos={num_demos}: "
                              "at most max_attempts seeds are tried; raise task.demos.max_attempts")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / (replayed_name(task, task.env_id) if cfg.replay else planned_name(task.env_id))
    seeds = list(range(cfg.seed, cfg.seed + cfg.max_attempts))
    kept: list[DemoResult] = []
    results: list[DemoResult] = []
    t_start = time.perf_counter()
    work_dir = tempfile.mkdtemp(prefix=".demos-", dir=out_dir)
    try:
        ctx = mp.get_context("spawn")  # ManiSkill/SAPIEN state must not be forked
        with ctx.Pool(cfg.num_workers, initializer=quiet_worker) as pool, tqdm(
            total=num_demos, desc=f"{task.env_id} demos", unit="demo", disable=not progress
        ) as bar:
            it = pool.imap(_demo_worker, [(task, s, work_dir) for s in seeds])  # ordered: first successes kept
            for seed in seeds:
                try:
                    r = it.next(timeout=cfg.timeout_s)
                except mp.TimeoutError:
                    raise GenerationError(
                        f"{task.env_id}: seed {seed} did not finish within demos.timeout_s={cfg.timeout_s:g} s "
                        "(is Vulkan/lavapipe installed? see scripts/install_system_deps.sh)"
                    ) from None
                results.append(r)
                if r.error and not kept and sum(x.error is not None for x in results) >= 3:
                    # three crashes before any success: a broken setup, not bad luck
                    raise GenerationError(f"{task.env_id}: seed {r.seed} crashed: {r.error.strip().splitlines()[-1]}")
                if r.replayed or (r.planned and not cfg.replay):
                    kept.append(r)
                    bar.update(1)
                fails = {"plan_fail": sum(not x.planned for x in results)}
                if cfg.replay:  # plan-only runs replay nothing, so nothing can fail there
                    fails["replay_fail"] = sum(x.planned and not x.replayed for x in results)
                bar.set_postfix(fails)
                if len(kept) == num_demos:
                    break
            pool.terminate()  # drop the seeds still in flight
        if len(kept) < num_demos:
            raise GenerationError(
                f"{task.env_id}: only {len(kept)}/{num_demos} successful demos in {len(results)} seeds "
                f"(demos.max_attempts={cfg.max_attempts})"
            )
        tmp = Path(work_dir) / final.name
        with contextlib.redirect_stdout(io.StringIO()):
            merge_trajectories(str(tmp), [r.path for r in kept])
        tmp.with_suffix(".json").replace(final.with_suffix(".json"))
        tmp.replace(final)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    planned = [r for r in results if r.planned]
    report = GenerationReport(
        path=final,
        num_demos=len(kept),
        seeds_tried=len(results),
        plan_failures=len(results) - len(planned),
        replay_failures=len(planned) - len(kept),
        plan_s=float(np.mean([r.plan_s for r in results])),
        replay_s=float(np.mean([r.replay_s for r in planned])),
        wall_s=time.perf_counter() - t_start,
        lengths=[r.steps for r in kept],
    )
    log.info(
        "%s: %d demos in %.1f s (%d seeds tried, %d plan failures, %d replay failures; %.2f s/plan, %.1f s/replay) -> %s",
        task.env_id, report.num_demos, report.wall_s, report.seeds_tried, report.plan_failures,
        report.replay_failures, report.plan_s, report.replay_s, final,
    )
    return report


# ----------------------------------------------------------------------------------------------------------------
# reading and validation


@dataclass
class Episode:
    """One validated trajectory. Frame t pairs obs t with action t; the final obs (after the last action) is dropped."""

    path: Path
    traj: str  # h5 group, traj_<episode_id>
    seed: int
    state: np.ndarray  # float32 [T, state_dim] = qpos[:T, :qpos_dim] + the task's state_extra entries
    actions: np.ndarray  # float32 [T, action_dim]
    steps: np.ndarray | None = None  # the recorded step of each frame, when some were left out (drop_idle_frames)

    def __len__(self) -> int:
        return len(self.actions)

    def images(self, camera: str) -> np.ndarray:
        """uint8 [T, S, S, 3] of one ManiSkill camera (read on demand: a 200-demo file does not fit in memory)."""
        key = f"obs/sensor_data/{camera}/rgb"
        try:
            with h5py.File(self.path, "r") as f:
                if self.steps is None:
                    return f[self.traj][key][: len(self)]
                return f[self.traj][key][: int(self.steps[-1]) + 1][self.steps]
        except (OSError, KeyError) as e:
            raise DataError(f"{self.path}: {self.traj}: {key}: cannot read ({_one_line(e)})") from None


def _one_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0] if lines else ''}"


def find_h5_files(input_path: str | Path) -> list[Path]:
    p = Path(input_path)
    if p.is_dir():
        files = sorted(p.glob("*.h5"))
        if not files:
            raise DataError(f"{p}: no .h5 files in directory")
        return files
    if not p.is_file():
        raise DataError(f"{p}: no such file or directory")
    return [p]


def _check(cond: bool, where: str, key: str, expected: str, found: object) -> None:
    if not cond:
        raise DataError(f"{where}: {key}: expected {expected}, found {found}")


def _lowdim(group: h5py.Group, key: str, where: str, length: int, min_dim: int) -> np.ndarray:
    _check(key in group, where, key, "a dataset", "nothing (missing key)")
    ds = group[key]
    _check(isinstance(ds, h5py.Dataset), where, key, "a dataset", "a group")
    _check(np.issubdtype(ds.dtype, np.floating), where, key, "a float dtype", ds.dtype)
    _check(ds.ndim == 2 and ds.shape[0] == length and ds.shape[1] >= min_dim, where, key,
           f"shape ({length}, >={min_dim})", tuple(ds.shape))
    x = ds[()]
    bad = ~np.isfinite(x)
    if bad.any():
        t, d = np.argwhere(bad)[0]
        raise DataError(f"{where}: {key}: expected finite values, found {x[t, d]} at step {t} dim {d}")
    return x.astype(np.float32)


# State entries that ManiSkill's RGB observation does not hold as such but that are exact functions of entries it
# does hold: name -> (minuend, subtrahend), both observation keys. tcp_to_goal_pos is ManiSkill's own name and
# definition (pick_single_ycb.py: goal_site.pose.p - agent.tcp.pose.p); for PickCube both operands are in every obs mode.
DERIVED_STATE = {"extra/tcp_to_goal_pos": ("extra/goal_pos", "extra/tcp_pose")}


def assemble_state(task: TaskConfig, read) -> np.ndarray:
    """The task's state from `read(obs_key, dims) -> array [..., >=dims]`: its state_sources in order, each cut to its
    dims, a DERIVED_STATE entry computed from its two operands. Demos (HDF5) and live envs both build the state here."""
    parts = []
    for key, dims in task.state_sources:
        if key in DERIVED_STATE:
            minuend, subtrahend = DERIVED_STATE[key]
            parts.append(read(minuend, dims)[..., :dims] - read(subtrahend, dims)[..., :dims])
        else:
            parts.append(read(key, dims)[..., :dims])
    return np.concatenate(parts, axis=-1)


def read_episodes(input_path: str | Path, task: TaskConfig) -> list[Episode]:
    """Validate every episode of a ManiSkill .h5 file (or a directory of them) against `task`; images stay on disk."""
    episodes = []
    for h5_path in find_h5_files(input_path):
        json_path = h5_path.with_suffix(".json")
        if not json_path.is_file():
            raise DataError(f"{json_path}: missing (ManiSkill writes <name>.json next to <name>.h5)")
        try:
            meta = json.loads(json_path.read_text())
            env_id = meta["env_info"]["env_id"]
            eps = meta["episodes"]
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(f"{json_path}: not a ManiSkill trajectory JSON ({_one_line(e)})") from None
        _check(env_id == task.env_id, str(json_path), "env_info.env_id", task.env_id, env_id)
        _check(len(eps) > 0, str(json_path), "episodes", "at least one episode", "none")
        try:
            f = h5py.File(h5_path, "r")
        except OSError as e:
            raise DataError(f"{h5_path}: not a readable HDF5 file ({_one_line(e)})") from None
        with f:
            for ep in eps:
                traj = f"traj_{ep['episode_id']}"
                where = f"{h5_path}: {traj}"
                _check(ep.get("control_mode") == task.control_mode, where, "control_mode", task.control_mode,
                       ep.get("control_mode"))
                try:
                    _check(traj in f, str(h5_path), traj, "an episode group (listed in the JSON)", "nothing")
                    g = f[traj]
                    _check("actions" in g, where, "actions", "a dataset", "nothing (missing key)")
                    T = g["actions"].shape[0] if g["actions"].ndim >= 1 else 0
                    _check(T >= 1, where, "actions", "at least 1 step", "an empty episode (0 steps)")
                    actions = _lowdim(g, "actions", where, T, task.action_dim)
                    _check(actions.shape[1] == task.action_dim, where, "actions", f"{task.action_dim} dims",
                           actions.shape[1])
                    state = assemble_state(task, lambda key, dims: _lowdim(g, f"obs/{key}", where, T + 1, dims)[:T])
                    for cam in task.cameras:
                        key = f"obs/sensor_data/{cam}/rgb"
                        _check(key in g, where, key, "a dataset", "nothing (missing key)")
                        ds = g[key]
                        S = task.image_size
                        _check(ds.dtype == np.uint8, where, key, "dtype uint8", ds.dtype)
                        _check(tuple(ds.shape) == (T + 1, S, S, 3), where, key, f"shape {(T + 1, S, S, 3)}",
                               tuple(ds.shape))
                except OSError as e:  # truncated / corrupt dataset bodies surface only when read
                    raise DataError(f"{where}: cannot read ({_one_line(e)})") from None
                episodes.append(Episode(h5_path, traj, int(ep.get("episode_seed", -1)),
                                        state, actions))
    return episodes


# ----------------------------------------------------------------------------------------------------------------
# live environments: the same observation schema as the converted datasets


def robot_kwargs(task: TaskConfig) -> dict:
    """gym.make's robot_uids for the task's robot; none (the env's own default robot) when task.robot is None."""
    return {} if task.robot is None else {"robot_uids": task.robot}


def make_env(task: TaskConfig, render_mode: str | None = None, max_episode_steps: int | None = None):
    """A ManiSkill env configured like the demos' replay (env_kwargs recorded in their JSON): the task's control
    mode, sim backend, sensor size and shader, RGB observations."""
    import gymnasium as gym

    import mani_skill.envs  # noqa: F401  (registers the envs)

    return gym.make(
        task.env_id,
        obs_mode="rgb",
        control_mode=task.control_mode,
        sim_backend=task.sim_backend,
        **robot_kwargs(task),
        sensor_configs=dict(shader_pack=task.shader, width=task.image_size, height=task.image_size),
        render_mode=render_mode,
        max_episode_steps=max_episode_steps or task.max_episode_steps,
    )


def _numpy(x) -> np.ndarray:
    return x.cpu().numpy() if hasattr(x, "cpu") else np.asarray(x)


def observation_from_env(obs: dict, task: TaskConfig, prompt: str | None = None, env_index: int = 0) -> dict:
    """A ManiSkill observation (obs_mode="rgb"; batched over envs as ManiSkill returns it) -> the observation schema
    of the converted datasets: the task's cameras under their schema keys, the hand camera's stand-in as zeros and
    mask False when the task has none, state = qpos[:qpos_dim] + the task's state_extra entries."""
    S = task.image_size
    images, masks = {}, {}
    for schema_key in DATASET_IMAGE_KEYS:
        cam = camera_for(task, schema_key)
        if cam is None:
            images[schema_key], masks[schema_key] = np.zeros((S, S, 3), np.uint8), False
        else:
            images[schema_key], masks[schema_key] = _numpy(obs["sensor_data"][cam]["rgb"][env_index])[..., :3], True
    return {
        "images": images,
        "image_masks": masks,
        "state": assemble_state(
            task, lambda key, dims: _numpy(functools.reduce(operator.getitem, key.split("/"), obs)[env_index])
        ).astype(np.float32),
        "prompt": task.prompt if prompt is None else prompt,
    }
