import pytest
import torch
import torch.nn.functional as F

from vla.models.gemma import attention_few_queries


@pytest.mark.parametrize("kv_heads", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_attention_few_queries_equals_sdpa(kv_heads, dtype):
    """The denoising step's written-out attention is SDPA's: same GQA head grouping, same masking, float32 softmax."""
    g = torch.Generator().manual_seed(0)
    B, T, S, N, H = 3, 5, 23, 4, 16
    q = torch.randn(B, T, N, H, generator=g).to(dtype)
    k = torch.randn(B, S, kv_heads, H, generator=g).to(dtype)
    v = torch.randn(B, S, kv_heads, H, generator=g).to(dtype)
    mask = torch.rand(B, T, S, generator=g) > 0.4
    mask[:, :, -T:] = True  # every query sees at least its own block, as in a denoising step
    mask[1, :, 3:12] = False  # padded prompt keys of one sample
    ours = attention_few_queries(q, k, v, mask)
    ref = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask[:, None], enable_gqa=kv_heads != N
    ).transpose(1, 2)
    assert ours.shape == ref.shape and ours.dtype == dtype
    torch.testing.assert_close(ours, ref, **({"atol": 2e-2, "rtol": 2e-2} if dtype == torch.bfloat16 else {}))
    # a masked key's value cannot reach the output
    v2 = v.clone()
    v2[1, 3:12] = 1e4
    torch.testing.assert_close(attention_few_queries(q, k, v2, mask)[1], ours[1])
