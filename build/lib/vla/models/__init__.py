"""Pi0 / Pi0.5 policies. `build_policy("pi05")` builds from conf/model/<name>.yaml (or a config object)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

from vla.models.config import PolicyConfig

if TYPE_CHECKING:
    from vla.models.pi0 import Pi0Policy


def load_policy_config(name_or_cfg: str | PolicyConfig | DictConfig | dict, **overrides) -> PolicyConfig:
    """A PolicyConfig from a model config name (conf/model/<name>.yaml, composed by Hydra), a DictConfig/dict (e.g. a
    checkpoint's recorded `model`), or a PolicyConfig; `overrides` are field values merged on top."""
    if isinstance(name_or_cfg, str):
        from vla.configs import load_group  # the config system sits above the models

        name_or_cfg = load_group("model", name_or_cfg)
    node = OmegaConf.merge(OmegaConf.structured(PolicyConfig), name_or_cfg)  # unknown keys fail here, by name
    if overrides:
        node = OmegaConf.merge(node, overrides)
    return OmegaConf.to_object(node)


def build_policy(name_or_cfg: str | PolicyConfig | DictConfig | dict, **overrides) -> Pi0Policy:
    """Build a policy with fresh from-scratch weights on the current default device; under `torch.device("meta")`
    no memory is allocated (call `to_empty` then `init_weights` or load a checkpoint)."""
    from vla.models.pi0 import Pi0Policy  # here, not at the top: the model pulls in transformers (SigLIP)

    policy = Pi0Policy(load_policy_config(name_or_cfg, **overrides))
    if not any(p.is_meta for p in policy.parameters()):
        policy.init_weights()
    return policy


def __getattr__(name: str):
    # `from vla.models import Pi0Policy` still works, but importing the package (and with it vla.models.config, which
    # vla.data needs) does not import the model and transformers.
    if name == "Pi0Policy":
        from vla.models.pi0 import Pi0Policy

        return Pi0Policy
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["PolicyConfig", "Pi0Policy", "build_policy", "load_policy_config"]
