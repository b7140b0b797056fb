"""The chunk-level critic Q(observation, action chunk): an ensemble of MLP heads with LayerNorm (as the critics of
FQL, Q-chunking and ConRFT), reading observation features and the first h actions of a chunk (normalized, flattened).

Observation features (`CriticConfig.features`):
  policy   the frozen policy's prefix pass, pooled per layer (vla.rl.sampling.pooled_prefix_features), + the
           normalized state. Sampling a chunk needs that pass anyway, so the critic costs one small MLP per sample and
           no second image encoder; the default because it is the cheapest. Whether it scores chunks as well as an
           encoder trained for the purpose is to be measured on the benchmark tasks.
  encoder  a small convolutional encoder of the base camera + the state, trained with the critic.

A critic is saved as critic.safetensors + critic.json (what it was trained for: task, model, features, sizes), and
loading it for another task or model fails in one line.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

CRITIC_WEIGHTS, CRITIC_META = "critic.safetensors", "critic.json"


class CriticError(ValueError):
    """A critic that does not fit what it is asked to score."""


@dataclass
class CriticSpec:
    """Everything needed to rebuild a critic and to check it fits a task and policy (critic.json)."""

    task: str
    env_id: str
    model: str  # the policy's model config name (its prefix pass gives the features)
    features: str  # policy | encoder
    feature_dim: int  # policy: pooled prefix width; encoder: its output width
    state_dim: int  # the model's padded state width
    chunk_len: int
    action_dim: int  # the task's action dims (the chunk's first action_dim of the model's padded dims)
    hidden_dims: list[int] = field(default_factory=lambda: [256, 256])
    num_qs: int = 2
    encoder_channels: list[int] = field(default_factory=lambda: [32, 64, 64])
    encoder_image_size: int = 64
    image_key: str = "base_0_rgb"
    gamma: float = 0.99
    reward: str = "sparse"
    policy_checkpoint: str | None = None  # the policy the critic was trained with (features and samples)


def mlp(in_dim: int, hidden_dims: list[int], out_dim: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in hidden_dims:
        layers += [nn.Linear(in_dim, width), nn.LayerNorm(width), nn.GELU()]
        in_dim = width
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


class ConvEncoder(nn.Module):
    """Base camera ([-1, 1], B x 3 x S x S) -> strided convolutions -> spatial mean -> linear."""

    def __init__(self, channels: list[int], out_dim: int):
        super().__init__()
        convs, c_in = [], 3
        for i, c in enumerate(channels):
            convs += [nn.Conv2d(c_in, c, kernel_size=4 if i == 0 else 3, stride=2), nn.GELU()]
            c_in = c
        self.convs = nn.Sequential(*convs)
        self.proj = nn.Linear(c_in, out_dim)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.proj(self.convs(image.float()).mean(dim=(2, 3)))


class ChunkCritic(nn.Module):
    """forward(obs, chunks) -> Q (num_qs, B, N) for chunks (B, N, >=h, >=A) (N candidates per observation), or
    (num_qs, B) for chunks (B, >=h, >=A). `obs` holds `features` (B, F) for features=policy, or `image` for
    features=encoder, and `state` (B, state_dim) either way."""

    def __init__(self, spec: CriticSpec):
        super().__init__()
        self.spec = spec
        self.encoder = ConvEncoder(spec.encoder_channels, spec.feature_dim) if spec.features == "encoder" else None
        obs_dim = spec.feature_dim + spec.state_dim
        self.obs_norm = nn.LayerNorm(obs_dim)  # pooled activations and states come in very different scales
        in_dim = obs_dim + spec.chunk_len * spec.action_dim
        self.heads = nn.ModuleList([mlp(in_dim, list(spec.hidden_dims), 1) for _ in range(spec.num_qs)])

    def observation(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, feature_dim + state_dim), computed once per observation however many chunks are scored."""
        features = self.encoder(obs["image"]) if self.encoder is not None else obs["features"].float()
        return self.obs_norm(torch.cat([features, obs["state"].float()], dim=-1))

    def forward(self, obs: dict[str, torch.Tensor] | torch.Tensor, chunks: torch.Tensor) -> torch.Tensor:
        h, A = self.spec.chunk_len, self.spec.action_dim
        single = chunks.dim() == 3
        if single:
            chunks = chunks[:, None]
        B, N = chunks.shape[:2]
        o = obs if isinstance(obs, torch.Tensor) else self.observation(obs)
        a = chunks[:, :, :h, :A].float().flatten(2)
        q = torch.stack([head_q(head, o, a) for head in self.heads])
        return q[..., 0] if single else q


def head_q(head: nn.Sequential, obs: torch.Tensor, chunks: torch.Tensor) -> torch.Tensor:
    """head(cat(obs, chunk)) for obs (B, O) and chunks (B, N, C) -> (B, N), the first layer's observation half applied
    once per observation rather than once per chunk: the observation is most of the input, and an update scores
    about 20 chunks per state."""
    first, O = head[0], obs.shape[-1]
    x = F.linear(obs, first.weight[:, :O])[:, None] + F.linear(chunks, first.weight[:, O:], first.bias)
    return head[1:](x).squeeze(-1)


def aggregate(q: torch.Tensor, how: str) -> torch.Tensor:
    """Over the ensemble (dim 0): min (conservative backups) or mean."""
    return q.min(dim=0).values if how == "min" else q.mean(dim=0)


@torch.no_grad()
def polyak_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """target <- (1 - tau) target + tau online."""
    for t, o in zip(target.parameters(), online.parameters(), strict=True):
        t.lerp_(o, tau)


def save_critic(critic: ChunkCritic, out_dir: str | Path) -> None:
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    save_file({k: v.detach().cpu().contiguous() for k, v in critic.state_dict().items()}, out_dir / CRITIC_WEIGHTS)
    (out_dir / CRITIC_META).write_text(json.dumps(asdict(critic.spec), indent=2) + "\n")


def find_saved(path: str | Path, meta: str, what: str, made_by: str) -> Path:
    """The dir holding `meta`: `path` itself, else a run dir's newest checkpoint holding one."""
    path = Path(path)
    if (path / meta).is_file():
        return path
    root = path / "checkpoints"
    steps = sorted(int(p.name) for p in root.iterdir() if p.name.isdigit() and (p / meta).is_file()) \
        if root.is_dir() else []
    if not steps:
        raise FileNotFoundError(f"{what}={path}: no {meta} in it or in its checkpoints/<step>/ ({made_by} or its "
                                "checkpoint dir)")
    return root / str(steps[-1])


def find_critic(path: str | Path) -> Path:
    return find_saved(path, CRITIC_META, "critic", "an algo=qchunk run")


def check_fit(meta: Path, own_task: str, own_model: str, task: str, model: str, use: str) -> None:
    """One line when what `meta` describes was trained for another task or on another policy model."""
    if own_task != task:
        raise CriticError(f"{meta}: trained for task {own_task}, asked to {use} task {task}; train one for {task} "
                          f"(train.py algo=qchunk task={task} ...)")
    if own_model != model:
        raise CriticError(f"{meta}: trained on the features of a {own_model} policy, asked to {use} a {model} "
                          "policy; use one trained with this policy")


def load_critic(path: str | Path, task: str, model: str, device: str | torch.device = "cpu") -> ChunkCritic:
    """The critic of `path` (see `find_critic`), checked against the task and policy model it is to score."""
    from safetensors.torch import load_file

    ckpt = find_critic(path)
    try:
        spec = CriticSpec(**json.loads((ckpt / CRITIC_META).read_text()))
    except (TypeError, ValueError) as e:
        raise CriticError(f"{ckpt / CRITIC_META}: not a critic description ({str(e).splitlines()[0]})") from None
    check_fit(ckpt / CRITIC_META, spec.task, spec.model, task, model, "score chunks of")
    critic = ChunkCritic(spec)
    critic.load_state_dict(load_file(ckpt / CRITIC_WEIGHTS))
    return critic.to(device).eval()


def critic_inputs(spec: CriticSpec, batch: dict, prefix_features: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """The critic's observation inputs from a model batch and (features=policy) its pooled prefix features."""
    obs = {"state": batch["state"]}
    if spec.features == "policy":
        obs["features"] = prefix_features
    else:
        image = batch["images"][spec.image_key]  # uint8 from the model transform, [-1, 1] after augmentation
        image = image.float() / 127.5 - 1.0 if image.dtype == torch.uint8 else image.float()
        size = spec.encoder_image_size
        obs["image"] = image if image.shape[-1] == size else F.interpolate(
            image, size=(size, size), mode="bilinear", antialias=True)
    return obs
