"""How the model is split over the ranks and run on them, in one function (torchtitan's `parallelize`): activation
checkpointing, compilation, FSDP2 sharding and mixed precision. The process group, the mesh and the collectives are
`distributed.py`'s."""

from __future__ import annotations

import torch
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

from vla.models.config import DTYPES
from vla.models.pi0 import Pi0Policy
from vla.configs import HardwareConfig


def parallelize(policy: Pi0Policy, hw: HardwareConfig, mesh: DeviceMesh) -> Pi0Policy:
    """Wrap `policy` in place, in this order (each step relies on the previous one):

    1. activation checkpointing: each joint Gemma layer, and each SigLIP encoder layer through transformers' own
       gradient-checkpointing switch;
    2. torch.compile of each joint layer (in place, so parameter names do not change), and with
       `hw.compile_vision` of each SigLIP encoder layer;
    3. FSDP2 `fully_shard` on each joint layer (the unit that holds layer i of both experts and their shared
       attention), then the vision tower + projection as one unit, then the root (token embedding, final norms,
       action/time projections), over `mesh` as `distributed.init_mesh` builds it: 1-D on one node (FSDP), 2-D
       (replicate, shard) on several (HSDP: sharded within a node, replicated across nodes). Parameters stay fp32
       (the master copy the optimizer updates); the MixedPrecisionPolicy gathers them in `hw.precision` for
       compute and reduces gradients in fp32.

    The root keeps its inputs as given (`cast_forward_inputs=False`): the flow-matching targets and noise are built
    in fp32 from the batch, and cast where they enter a bf16 layer.
    """
    if hw.precision not in ("fp32", "bf16"):
        raise ValueError(f"hardware.precision: expected fp32 or bf16, found {hw.precision!r}")
    layers = policy.transformer.layers
    if hw.activation_checkpointing:
        for i, layer in enumerate(layers):
            layers[i] = checkpoint_wrapper(layer, preserve_rng_state=False)  # the layers draw no random numbers
        policy.image_encoder.tower.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if hw.compile:
        for layer in layers:
            layer.compile()
    if hw.compile_vision:  # transformers' eager SigLIP: many small ops, a host-bound share of a small model's step
        for layer in policy.image_encoder.encoder_layers:
            layer.compile()

    mp = MixedPrecisionPolicy(param_dtype=DTYPES[hw.precision], reduce_dtype=torch.float32)
    shard = dict(mesh=mesh, mp_policy=mp, reshard_after_forward=hw.reshard_after_forward)
    for layer in layers:
        fully_shard(layer, **shard)
    fully_shard(policy.image_encoder, **shard)
    root_mp = MixedPrecisionPolicy(param_dtype=DTYPES[hw.precision], reduce_dtype=torch.float32, cast_forward_inputs=False)
    fully_shard(policy, mesh=mesh, mp_policy=root_mp, reshard_after_forward=hw.reshard_after_forward)
    register_fsdp_forward_method(policy, "sample_actions")  # unshard around sampling too (eval during training)
    return policy


def clean_name(name: str) -> str:
    """Parameter name without the wrappers' prefixes (activation checkpointing, compile)."""
    return name.replace("_checkpoint_wrapped_module.", "").replace("_orig_mod.", "")

