"""Typed schemas of the `task` config group (conf/task/*.yaml) and of convert.yaml, registered with Hydra's ConfigStore
so that a typo in an override fails at composition. Numbers live in the yaml files; the defaults here are only the
values every ManiSkill task shares."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

from vla.models.config import PolicyConfig


@dataclass
class DemoConfig:
    """Demo generation: ManiSkill motion planning (pd_joint_pos) -> replay to the task's control mode with RGB."""

    num_demos: int = 4  # successful, replayed demos to keep
    num_workers: int = 2  # worker processes (each plans and replays whole episodes)
    seed: int = 0  # first env seed tried; seeds are tried in order and the first num_demos successes are kept
    # seeds tried at most before giving up; must be >= num_demos (PlaceSphere plans succeed ~40% of the time)
    max_attempts: int = 100
    timeout_s: float = 600.0  # per episode (plan + replay): a broken setup hangs instead of failing
    # False: stop after motion planning and write <env_id>.planned.h5 (pd_joint_pos, no images). Planning is cheap on
    # any CPU; rendering is not (lavapipe), so the replay can run where a GPU renders, with ManiSkill's own tool:
    #   python -m mani_skill.trajectory.replay_trajectory --traj-path <env_id>.planned.h5 -o rgb -c pd_ee_delta_pose
    #       -b physx_cpu --save-traj -n <processes>
    replay: bool = True
    out_dir: str = MISSING  # where the merged <env_id>.rgb.<control_mode>.<backend>.h5/.json (or .planned) is written


@dataclass
class TaskConfig:
    name: str = MISSING  # short name, also the conf file name (pickcube, ...)
    env_id: str = MISSING  # ManiSkill env id (PickCube-v1, ...)
    prompt: str = MISSING  # language instruction stored with every frame (the fork's TASK_PROMPTS)
    control_mode: str = "pd_ee_delta_pose"  # dataset actions and eval controller; the converter rejects other modes
    sim_backend: str = "physx_cpu"
    # ManiSkill robot_uids for demos and eval; None keeps the env's own default (panda for PickCube/PushCube/PullCube/
    # PlaceSphere, panda_wristcam for StackCube/PegInsertionSide). "panda_wristcam" is the same Panda (same kinematics
    # and planner) with a 'hand_camera' sensor on the hand, which `cameras` can then map to the wrist image key
    robot: str | None = None
    control_freq: int = 20  # Hz of env.step (ManiSkill default for these tasks); also the dataset fps
    max_episode_steps: int = MISSING  # eval horizon, ~2x the mean replayed demo length
    # ManiSkill sensor name -> observation-schema image key; a schema camera not listed here is zeros + mask False.
    cameras: dict[str, str] = field(default_factory=lambda: {"base_camera": "base_0_rgb"})
    image_size: int = 256  # sensor width = height (sensor_configs), the stored image size
    shader: str = "default"  # sensor shader pack used for demos; eval must render with the same one
    state_dim: int = 8  # state size: qpos[:qpos_dim] (7 arm joints + one finger), then the state_extra entries
    # obs/extra/<key> -> dims, appended to the state: what the cameras cannot see (PickCube's goal is hidden from them);
    # a key of vla.data.maniskill.DERIVED_STATE (tcp_to_goal_pos) is computed from two observation keys
    state_extra: dict[str, int] = field(default_factory=dict)
    action_dim: int = 7  # pd_ee_delta_pose: xyz delta, rotation delta, gripper
    # Two actors of the scene (names in env.get_state_dict()['actors']) whose distance eval records per episode, at the
    # start, closest and final (m): how near a failed episode came. PickCube: [cube, goal_site], placed within 0.025
    goal_distance: list[str] = field(default_factory=list)
    repo_id: str = MISSING  # LeRobot repo id written into the dataset (never pushed)
    dataset_root: str = MISSING  # LeRobot dataset directory
    norm_stats: str = MISSING  # norm_stats.json path (next to the dataset)
    demos: DemoConfig = field(default_factory=DemoConfig)

    @property
    def qpos_dim(self) -> int:
        return self.state_dim - sum(self.state_extra.values())

    @property
    def state_sources(self) -> list[tuple[str, int]]:
        """The state's parts in order, as (ManiSkill observation key, dims): demos and live envs both read these."""
        return [("agent/qpos", self.qpos_dim), *((f"extra/{key}", dims) for key, dims in self.state_extra.items())]


@dataclass
class ConvertConfig:
    task: TaskConfig = MISSING
    model: PolicyConfig = MISSING  # only action_horizon is used: the action stats run over H-step chunks (openpi)
    input: str = "generate"  # a ManiSkill .h5 file, a directory of them, or "generate" (motion planning + replay first)
    output: str = MISSING  # dataset directory; must not exist unless overwrite
    overwrite: bool = False
    use_videos: bool = False  # False: PNG frames in parquet (exact pixels); True: AV1 mp4 (~10x smaller, lossy)
    # >1: write that many shards in parallel processes and merge them (lerobot's aggregate_datasets); the same dataset
    num_workers: int = 1
    # P20 normalizes without clipping: a frame whose state or action normalizes beyond this (e.g. a dimension constant
    # but for one frame, so q01 = q99) stops the conversion with its file, episode and frame named...
    max_normalized: float = 100.0
    # ...or, if true, every episode holding such a frame is left out (logged) and the stats computed without them
    drop_outliers: bool = False
    # null: every recorded frame; a number: leave out the frames in which the demo holds still (every arm action dim
    # within +-this, gripper command unchanged): planner pauses a policy cannot time from its state (convert.py)
    idle_action_max: float | None = None


def register_configs() -> None:
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(group="task", name="task_schema", node=TaskConfig)
    cs.store(name="convert_schema", node=ConvertConfig)


def load_task_config(name: str, **overrides) -> TaskConfig:
    """conf/task/<name>.yaml outside Hydra (scripts, tests): merged into the schema, plus overrides."""
    from omegaconf import OmegaConf

    from vla.models import CONF_DIR

    path = CONF_DIR / "task" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ValueError(f"unknown task {name!r}: no {path} (known: {', '.join(known)})")
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(TaskConfig), task_yaml(path), overrides))


def task_yaml(path):
    """A task file merged over the task files its defaults list names (as Hydra composes the group: a variant like
    pickcube_wristcam.yaml starts from pickcube.yaml); task_schema and _self_ are the schema and the file itself."""
    from omegaconf import OmegaConf

    raw = OmegaConf.load(path)
    bases = [d for d in raw.pop("defaults", []) if isinstance(d, str) and d not in ("task_schema", "_self_")]
    return OmegaConf.merge(*(task_yaml(path.parent / f"{name}.yaml") for name in bases), raw)
