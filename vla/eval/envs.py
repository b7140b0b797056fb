"""ManiSkill envs in worker processes (CPU physics), so that many episodes run at once and feed one batched policy
call. Each worker owns one env made by `vla.data.maniskill.make_env` (the demos' control mode, sim backend, sensor
size and shader) and speaks a tiny protocol over a pipe:

  ("reset", (seed, video)) -> (observation schema, frames or None, distance)  (reconfigure=True: a new scene every
                              episode; video: this episode's frames are recorded; distance: the task's goal_distance
                              at the start, or None)
  ("run", actions (k, A))  -> (observation schema, successes (k,), frames or None, reached, distances)
                              executes the k actions; terminations are ignored (ManiSkill's evaluation protocol);
                              the caller stops at max_episode_steps. reached: each of the env's other boolean info
                              flags (PickCube: is_grasped, is_obj_placed, is_robot_static) -> whether it held at any
                              of the k steps, so that a failed episode says how far it got; distances (k,): the
                              task's goal_distance after each step (None when the task names no actors)
  ("close", None)
"""

from __future__ import annotations

import multiprocessing as mp
import traceback
from pathlib import Path

import numpy as np

from vla.data.config import TaskConfig
from vla.data.maniskill import make_env, observation_from_env, quiet_worker


class EnvError(RuntimeError):
    pass


def check_sim_backend(task: TaskConfig) -> None:
    """ManiSkill's GPU physics needs SAPIEN's PhysX GPU library, which SAPIEN downloads from GitHub on first use: on an
    offline machine that hangs or fails deep inside. Say so up front instead."""
    if task.sim_backend in ("physx_cuda", "physx_gpu", "gpu"):
        import sapien

        lib = Path.home() / ".sapien" / "physx" / sapien.physx.version() / "libPhysXGpu_64.so"
        if not lib.is_file():
            raise EnvError(
                f"task.sim_backend={task.sim_backend} needs SAPIEN's PhysX GPU library {lib}, which SAPIEN downloads "
                "on first use and this machine cannot fetch offline; use task.sim_backend=physx_cpu with "
                "num_envs worker processes instead"
            )


def merge_reached(reached: dict[str, bool], flags: dict[str, bool]) -> None:
    """Fold later steps' flags into `reached`: a flag counts once it has held at any step."""
    for key, flag in flags.items():
        reached[key] = reached.get(key, False) or flag


def boolean_flags(info: dict) -> dict[str, bool]:
    """The env's boolean info flags other than success/fail, for one env (ManiSkill batches them as (1,) tensors)."""
    flags = {}
    for key, value in info.items():
        value = np.asarray(value.cpu() if hasattr(value, "cpu") else value)
        if key not in ("success", "fail") and value.dtype == bool and value.size == 1:
            flags[key] = bool(value.reshape(-1)[0])
    return flags


def goal_distance(env, task: TaskConfig) -> float | None:
    """Distance (m) between the positions of the task's two goal_distance actors, read from the env's public state
    dict (what ManiSkill's trajectories record as env_states), or None when the task names none."""
    if not task.goal_distance:
        return None
    actors = env.unwrapped.get_state_dict()["actors"]
    missing = [name for name in task.goal_distance if name not in actors]
    if missing or len(task.goal_distance) != 2:
        raise ValueError(f"task {task.name}: goal_distance {list(task.goal_distance)}: expected two actor names of "
                         f"{task.env_id}, found actors {sorted(actors)}")
    a, b = (np.asarray(actors[name].cpu()).reshape(-1)[:3] for name in task.goal_distance)
    return float(np.linalg.norm(a - b))


def _frame(obs_schema: dict) -> np.ndarray:
    """Video frame: the visible cameras side by side."""
    imgs = [img for key, img in obs_schema["images"].items() if obs_schema["image_masks"][key]]
    return np.concatenate(imgs, axis=1)


def serve_commands(conn, open_worker) -> None:
    """The worker side of EnvPool's pipe, shared by every simulator's worker: `open_worker()` builds the worker (an
    object with `handle(cmd, arg) -> reply` and `close()`), then each (cmd, arg) is answered with ("ok", reply) until
    ("close", _). An exception, the worker's construction included, goes back as ("error", traceback), which the
    parent raises with the worker's traceback."""
    worker = None
    try:
        worker = open_worker()
        while True:
            cmd, arg = conn.recv()
            if cmd == "close":
                break
            conn.send(("ok", worker.handle(cmd, arg)))
    except Exception:  # noqa: BLE001 - reported to the parent
        conn.send(("error", traceback.format_exc()))
    finally:
        if worker is not None:
            worker.close()
        conn.close()


class _ManiSkillWorker:
    """("reset", (seed, record_video)) -> (observation, frames, goal distance); ("run", actions) -> (observation,
    successes, frames, env flags reached, goal distances)."""

    def __init__(self, task: TaskConfig):
        self.task, self.env, self.record_video = task, make_env(task), False

    def handle(self, cmd: str, arg):
        env, task = self.env, self.task
        if cmd == "reset":
            seed, self.record_video = arg
            obs, _ = env.reset(seed=int(seed), options=dict(reconfigure=True))
            schema = observation_from_env(obs, task)
            return schema, [_frame(schema)] if self.record_video else None, goal_distance(env, task)
        if cmd == "run":
            successes, frames, reached, distances = [], [] if self.record_video else None, {}, []
            for action in arg:
                obs, _, _, _, info = env.step(action)
                successes.append(bool(np.asarray(info["success"]).reshape(-1)[0]))
                merge_reached(reached, boolean_flags(info))
                distances.append(goal_distance(env, task))
                if self.record_video:
                    frames.append(_frame(observation_from_env(obs, task)))
            distances = np.array(distances, np.float64) if task.goal_distance else None
            return observation_from_env(obs, task), np.array(successes), frames, reached, distances
        raise ValueError(f"env worker: unknown command {cmd!r}")

    def close(self) -> None:
        self.env.close()


def _worker(conn, task: TaskConfig) -> None:
    import torch

    quiet_worker()  # errors travel back through the pipe
    torch.set_num_threads(1)  # physics + CPU rendering; the policy process owns the other cores
    serve_commands(conn, lambda: _ManiSkillWorker(task))


class EnvPool:
    """`n` env worker processes for one task. `worker(conn, task)` is the process's loop (a module-level function:
    it is pickled for spawn): another simulator's (vla.eval.libero_env's), or vla.rl's, which records rewards."""

    def __init__(self, task: TaskConfig, n: int, worker=_worker):
        check_sim_backend(task)
        ctx = mp.get_context("spawn")  # SAPIEN / Vulkan state must not be forked
        self.conns, self.procs = [], []
        for _ in range(n):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=worker, args=(child, task), daemon=True)
            proc.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(proc)

    def __len__(self) -> int:
        return len(self.conns)

    def send(self, i: int, cmd: str, arg=None) -> None:
        self.conns[i].send((cmd, arg))

    def recv(self, i: int):
        try:
            status, payload = self.conns[i].recv()
        except EOFError:
            raise EnvError(f"env worker {i} died (exit code {self.procs[i].exitcode})") from None
        if status == "error":
            raise EnvError(f"env worker {i} failed:\n{payload}")
        return payload

    def close(self) -> None:
        for conn in self.conns:
            try:
                conn.send(("close", None))
            except (BrokenPipeError, OSError):
                pass
        for proc in self.procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
        for conn in self.conns:
            conn.close()

    def __enter__(self) -> EnvPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

