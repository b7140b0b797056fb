"""tools/remote_gpu/pack_checkpoint.py: a checkpoint split into size-limited bf16 shards and joined back loads as
before."""

import pytest
import torch
from safetensors.torch import load_file, save_file

from tools.remote_gpu import pack_checkpoint


def test_pack_unpack_roundtrip(tmp_path):
    from vla.models import load_policy_config
    from vla.models.pi0 import Pi0Policy

    torch.manual_seed(0)
    state = {k: v.contiguous() for k, v in Pi0Policy(load_policy_config("pi05_tiny")).state_dict().items()}
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    save_file(state, ckpt / "ema.safetensors")
    save_file({k: torch.zeros_like(v) for k, v in state.items()}, ckpt / "model.safetensors")  # EMA wins
    (ckpt / "norm_stats.json").write_text("{}")
    (ckpt / "config.yaml").write_text("model: {}\n")

    shards = pack_checkpoint.pack(ckpt, tmp_path / "packed", "bf16", shard_mib=0.2)
    assert len(shards) > 1 and all(p.stat().st_size <= 0.2 * 2**20 + 4096 for p in shards)  # + safetensors header
    assert (tmp_path / "packed" / "norm_stats.json").is_file()

    out = pack_checkpoint.unpack(tmp_path / "packed", tmp_path / "restored")
    restored = load_file(out / "ema.safetensors")
    assert set(restored) == set(state) and (out / "config.yaml").is_file()
    for k, v in state.items():
        assert restored[k].dtype == v.dtype
        torch.testing.assert_close(restored[k], v.to(torch.bfloat16).to(v.dtype), rtol=0, atol=0)

    with pytest.raises(SystemExit, match="no ema.safetensors or model.safetensors"):
        pack_checkpoint.pack(tmp_path / "packed", tmp_path / "nowhere", "bf16", shard_mib=1)
    assert not (tmp_path / "nowhere").exists()

    shards[0].unlink()
    with pytest.raises(SystemExit, match="shards found"):
        pack_checkpoint.unpack(tmp_path / "packed", tmp_path / "again")
