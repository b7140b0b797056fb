"""Typed schemas of the `task` config group (conf/task/*.yaml) and of the recipe's `data` part (registered with Hydra
by vla.configs, so that a typo in an override fails at composition). The defaults here are the values every ManiSkill
task shares, so a task file states only what differs; LIBERO suites (`backend: libero`) add `task.libero`."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


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
    # where the merged <env_id>.rgb.<control_mode>.<backend>.h5/.json (or .planned.h5) is written
    out_dir: str = "data/demos/${..name}"

    def __post_init__(self) -> None:
        _check(self.num_demos >= 1, f"task.demos.num_demos={self.num_demos}: must be at least 1")
        _check(self.num_workers >= 1, f"task.demos.num_workers={self.num_workers}: must be at least 1")
        _check(self.max_attempts >= self.num_demos,
               f"task.demos.max_attempts={self.max_attempts}: must be >= task.demos.num_demos={self.num_demos}")


BACKENDS = ("maniskill", "libero")


@dataclass
class LiberoConfig:
    """What a LIBERO suite's evaluation adds to a task (vla.eval.libero_env; openpi examples/libero/main.py's Args).
    Episode j of a task starts from the task's fixed initial state j (LIBERO's init files); eval.num_episodes counts
    episodes per task."""

    task_ids: list[int] | None = None  # the suite's tasks to evaluate (LIBERO's task order 0); null: all of them
    num_steps_wait: int = 10  # no-op steps ([0]*6 + [-1]) after each reset while objects settle; not counted
    seed: int = 7  # env.seed(seed) when a task's env is built (LIBERO seeds numpy's global RNG: fixture placement)
    replan_steps: int = 5  # actions executed per predicted chunk unless eval.replan_steps says otherwise
    # robosuite camera -> observation-schema key (openpi's LiberoInputs: image -> base_0_rgb, wrist_image ->
    # left_wrist_0_rgb); rendered at task.image_size and turned 180 degrees, as LIBERO's training data was stored
    cameras: dict[str, str] = field(
        default_factory=lambda: {"agentview": "base_0_rgb", "robot0_eye_in_hand": "left_wrist_0_rgb"})

    def __post_init__(self) -> None:
        _check(self.num_steps_wait >= 0, f"task.libero.num_steps_wait={self.num_steps_wait}: must be >= 0")
        _check(self.replan_steps >= 1, f"task.libero.replan_steps={self.replan_steps}: must be at least 1")
        _check(self.task_ids is None or (len(self.task_ids) > 0 and min(self.task_ids) >= 0),
               f"task.libero.task_ids={self.task_ids}: expected task indices >= 0, or null for every task")


@dataclass
class TaskConfig:
    name: str = MISSING  # short name, also the conf file name (pickcube, ...)
    # which simulator runs the task: maniskill (ManiSkill3 env ids) | libero (LIBERO suites, the `libero` extra)
    backend: str = "maniskill"
    env_id: str = MISSING  # ManiSkill env id (PickCube-v1, ...), or the LIBERO suite (libero_spatial, ...)
    # stored with every frame (the TASK_PROMPTS of EasonAI-5589/openpi's ManiSkill converter); null (LIBERO): each
    # task's own language instruction
    prompt: str | None = MISSING
    control_mode: str = "pd_ee_delta_pose"  # dataset actions and eval controller; the converter rejects other modes
    sim_backend: str = "physx_cpu"
    # ManiSkill robot_uids for demos and eval; None keeps the env's own default (panda for PickCube/PushCube/PullCube/
    # PlaceSphere, panda_wristcam for StackCube/PegInsertionSide). "panda_wristcam" is the same Panda (same kinematics
    # and planner) with a 'hand_camera' sensor on the hand, which `cameras` can then map to the wrist image key
    robot: str | None = None
    control_freq: int = 20  # Hz of env.step (ManiSkill default for these tasks); also the dataset fps
    max_episode_steps: int = MISSING  # eval horizon, ~2x the mean replayed demo length
    # ManiSkill sensor name -> observation-schema image key; a schema camera not listed here is zeros + mask False.
    # (LIBERO tasks: task.libero.cameras)
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
    repo_id: str = "vla/maniskill_${.name}"  # LeRobot repo id written into the dataset (never pushed)
    dataset_root: str = "data/maniskill_${.name}"  # LeRobot dataset directory
    norm_stats: str = "${.dataset_root}/norm_stats.json"  # next to the dataset
    demos: DemoConfig = field(default_factory=DemoConfig)
    libero: LiberoConfig = field(default_factory=LiberoConfig)  # read only with backend: libero

    def __post_init__(self) -> None:
        _check(self.backend in BACKENDS, f"task.backend={self.backend!r}: expected one of {', '.join(BACKENDS)}")
        _check(self.prompt is not None or self.backend == "libero",
               "task.prompt=null: only LIBERO tasks (backend: libero) take their prompts from the simulator")
        _check(self.image_size >= 1, f"task.image_size={self.image_size}: must be positive")
        _check(self.control_freq >= 1, f"task.control_freq={self.control_freq}: must be positive")
        _check(self.max_episode_steps >= 1, f"task.max_episode_steps={self.max_episode_steps}: must be positive")
        _check(self.qpos_dim >= 1, f"task.state_dim={self.state_dim}: must exceed the state_extra dims "
               f"({sum(self.state_extra.values())}: {dict(self.state_extra)})")

    @property
    def qpos_dim(self) -> int:
        return self.state_dim - sum(self.state_extra.values())

    @property
    def state_sources(self) -> list[tuple[str, int]]:
        """The state's parts in order, as (ManiSkill observation key, dims): demos and live envs both read these."""
        return [("agent/qpos", self.qpos_dim), *((f"extra/{key}", dims) for key, dims in self.state_extra.items())]


@dataclass
class DataConfig:
    """How recorded demos become the training dataset (convert.py): part of the recipe, so a run records it."""

    use_videos: bool = False  # False: PNG frames in parquet (exact pixels); True: AV1 mp4 (~10x smaller, lossy)
    # Normalization has no clipping (openpi's Normalize): a frame whose state or action normalizes beyond this (e.g. a
    # dimension constant but for one frame, so q01 = q99) stops the conversion with its file, episode and frame named...
    max_normalized: float = 100.0
    # ...or, if true, every episode holding such a frame is left out (logged) and the stats computed without them
    drop_outliers: bool = False
    # null: every recorded frame; a number: leave out the frames in which the demo holds still (every arm action dim
    # within +-this, gripper command unchanged): planner pauses a policy cannot time from its state (vla.data.convert)
    idle_action_max: float | None = None

    def __post_init__(self) -> None:
        _check(self.max_normalized > 0, f"data.max_normalized={self.max_normalized}: must be positive")
        _check(self.idle_action_max is None or self.idle_action_max >= 0,
               f"data.idle_action_max={self.idle_action_max}: must be >= 0, or null to keep every frame")


@dataclass
class AugmentConfig:
    """Train-time augmentation (openpi src/openpi/models/model.py preprocess_observation), drawn per sample on the
    training device; plus state noise, which openpi does not have."""

    crop_scale: float = 0.95  # non-wrist cameras: crop this fraction of the side at a random position, resize back
    max_rotation_deg: float = 5.0  # non-wrist cameras: rotate by U(-max, max)
    brightness: float = 0.3  # all cameras: factor U(1-b, 1+b)
    contrast: float = 0.4  # factor U(1-c, 1+c) around the image's mean grey
    saturation: float = 0.5  # factor U(1-s, 1+s) around each pixel's grey
    hue: float = 0.1  # rotation of chroma by U(-h, h) turns
    color_prob: float = 0.5  # each sample is colour-jittered with this probability (augmax's p)
    # Not in openpi: std of Gaussian noise on the normalized state (quantile units, [-1, 1] = q01..q99), added in the
    # loader before Pi0.5 discretizes it. 0 = off; see ModelTransform._noisy for why few-demo training wants it.
    state_noise_std: float = 0.0
    # dims of the state (as stored, before model.state_dims picks some) that get the noise; null = all
    state_noise_dims: list[int] | None = None
