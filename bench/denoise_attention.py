"""The attention of one denoising step at inference shapes: the action tokens (queries) against the cached prefix and
themselves (8 query heads, 1 KV head, head_dim 256; prompt padding masked), forward only, each of these ways:

  few_queries       gemma.attention_few_queries (what a denoising step runs): the query heads that share the KV head
                    folded into the rows of one bf16 bmm with float32 logits, float32 softmax, bf16 probs @ v
  few_queries_fp32  the same with the logits from a float32 bmm of the bf16 values (exact products; cuBLAS may pick
                    other kernels than for bf16 inputs with a float32 output)
  sdpa_<backend>    F.scaled_dot_product_attention(enable_gqa=True) with the boolean mask, forced onto one backend
  sdpa_folded_<b>   SDPA with the query heads folded into the query rows (one head of T x 8 queries)
  flex              FlexAttention (compiled) with the mask as a BlockMask; short query blocks take its decoding kernel

  python bench/denoise_attention.py [--batch 1 4] [--tokens 120] [--bucket 32]

Each variant is compiled with mode="reduce-overhead" and timed as the CUDA-graph replay of one call (median, CUDA
events), so the column is kernel time plus the replay's launch, as inside `sample_actions`; the layer count multiplies
it (18 layers x 10 steps per call). The diff column is the max abs difference to a float32 reference over the valid
outputs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from timing import cuda_median_ms
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vla.models.gemma import attention_few_queries  # noqa: E402

BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}


def few_queries_fp32(q, k, v, mask):
    B, T, N, H = q.shape
    S, K = k.shape[1], k.shape[2]
    G = N // K
    qf = q.view(B, T, K, G, H).permute(0, 2, 1, 3, 4).reshape(B * K, T * G, H).float()
    kf = k.permute(0, 2, 3, 1).reshape(B * K, H, S).float()
    logits = torch.bmm(qf, kf).view(B, K, T, G, S) * H**-0.5
    logits = logits.masked_fill(~mask[:, None, :, None, :], float("-inf"))
    probs = torch.softmax(logits, dim=-1).to(v.dtype).view(B * K, T * G, S)
    out = torch.bmm(probs, v.permute(0, 2, 1, 3).reshape(B * K, S, H))
    return out.view(B, K, T, G, H).permute(0, 2, 1, 3, 4).reshape(B, T, N, H)


def sdpa(backend: str, folded: bool):
    def fn(q, k, v, mask):
        B, T, N, H = q.shape
        with sdpa_kernel([BACKENDS[backend]]):
            if not folded:
                return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                      attn_mask=mask[:, None], enable_gqa=True).transpose(1, 2)
            qf = q.reshape(B, 1, T * N, H)  # row t * N + n: query t of head n
            m = mask[:, None, :, None, :].expand(B, 1, T, N, mask.shape[-1]).reshape(B, 1, T * N, -1)
            out = F.scaled_dot_product_attention(qf, k.transpose(1, 2), v.transpose(1, 2), attn_mask=m)
            return out.view(B, T, N, H)
    return fn


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--tokens", type=int, default=120, help="valid prompt tokens")
    ap.add_argument("--bucket", type=int, default=32, help="the prompt is trimmed to a multiple of this")
    ap.add_argument("--images", type=int, default=2)
    args = ap.parse_args()
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    dev, N, H, T = "cuda", 8, 256, 50
    L = -(-args.tokens // args.bucket) * args.bucket
    P = args.images * 256 + L
    S = P + T
    print(f"{T} queries x {N} heads against {S} keys ({P} prefix, {L - args.tokens} of them prompt padding)")
    print("| batch | variant | us per call | x 180 (ms per sample_actions) | max abs diff vs fp32 |")
    print("|---|---|---|---|---|")
    for B in args.batch:
        g = torch.Generator(device=dev).manual_seed(0)
        q = torch.randn(B, T, N, H, device=dev, dtype=torch.bfloat16, generator=g)
        k = torch.randn(B, S, 1, H, device=dev, dtype=torch.bfloat16, generator=g)
        v = torch.randn(B, S, 1, H, device=dev, dtype=torch.bfloat16, generator=g)
        valid = torch.ones(B, S, dtype=torch.bool, device=dev)
        valid[:, args.images * 256 + args.tokens:P] = False
        mask = valid[:, None, :].expand(B, T, S).contiguous()
        ref = sdpa("math", False)(q.float(), k.float(), v.float(), mask)

        def mask_mod(b, h, qi, ki):
            return valid[b, ki]

        block = create_block_mask(mask_mod, B, None, T, S, device=dev)
        variants = {"few_queries": attention_few_queries, "few_queries_fp32": few_queries_fp32,
                    **{f"sdpa_{b}": sdpa(b, False) for b in BACKENDS},
                    **{f"sdpa_folded_{b}": sdpa(b, True) for b in BACKENDS},
                    "flex": lambda q, k, v, mask: flex_attention(
                        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), block_mask=block,
                        enable_gqa=True).transpose(1, 2)}
        for name, fn in variants.items():
            compiled = torch.compile(fn, mode="reduce-overhead", dynamic=False)
            try:
                out = compiled(q, k, v, mask).clone()
            except Exception as e:  # a backend that does not take these shapes says why
                print(f"| {B} | {name} | unsupported: {str(e).splitlines()[0][:90]} | | |", flush=True)
                continue
            diff = (out.float() - ref).abs().max().item()
            us = 1000 * cuda_median_ms(lambda: compiled(q, k, v, mask), iters=50)
            print(f"| {B} | {name} | {us:.1f} | {us * 180 / 1000:.2f} | {diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()
