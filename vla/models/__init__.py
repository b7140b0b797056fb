"""Pi0 / Pi0.5 policies. `build_policy("pi05")` builds from conf/model/<name>.yaml (or a config object)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from vla.models.config import PolicyConfig
from vla.models.pi0 import Pi0Policy

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def load_policy_config(name_or_cfg: str | PolicyConfig | DictConfig | dict, **overrides) -> PolicyConfig:
    """A PolicyConfig from a model config name (conf/model/<name>.yaml), a DictConfig/dict, or a PolicyConfig."""
    if isinstance(name_or_cfg, PolicyConfig):
        node = OmegaConf.structured(name_or_cfg)
    else:
        if isinstance(name_or_cfg, str):
            path = CONF_DIR / "model" / f"{name_or_cfg}.yaml"
            if not path.is_file():
                known = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))
                raise ValueError(f"unknown model config {name_or_cfg!r}: no {path} (known: {', '.join(known)})")
            name_or_cfg = OmegaConf.load(path)
        raw = OmegaConf.to_container(OmegaConf.create(name_or_cfg), resolve=True)
        raw.pop("defaults", None)
        node = OmegaConf.merge(OmegaConf.structured(PolicyConfig), raw)  # unknown keys fail here, by name
    if overrides:
        node = OmegaConf.merge(node, overrides)
    return OmegaConf.to_object(node)


def build_policy(name_or_cfg: str | PolicyConfig | DictConfig | dict, **overrides) -> Pi0Policy:
    """Build a policy with fresh from-scratch weights on the current default device; under `torch.device("meta")`
    no memory is allocated (call `to_empty` then `init_weights` or load a checkpoint)."""
    policy = Pi0Policy(load_policy_config(name_or_cfg, **overrides))
    if not any(p.is_meta for p in policy.parameters()):
        policy.init_weights()
    return policy


__all__ = ["PolicyConfig", "Pi0Policy", "build_policy", "load_policy_config"]
