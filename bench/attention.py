"""The joint attention of one Pi0.5 layer at training shapes (8 query heads, 1 KV head, head_dim 256, block mask of
prefix | suffix with padded prompt tokens), forward + backward, each of these ways:

  sdpa_gqa      F.scaled_dot_product_attention(enable_gqa=True) with the boolean mask (what gemma.py does)
  sdpa_expand   the KV head repeated to 8 heads first, then SDPA with the mask
  flex          FlexAttention (compiled) with the same mask as a BlockMask
  split_mask    two SDPA calls, one per block: prefix queries x prefix keys, suffix queries x all keys, each with a
                key-padding mask only (B, 1, 1, S): Pi0.5's block mask is exactly that pair
  split_<backend>  the same two calls with no mask, forced onto one SDPA backend (flash / cudnn / efficient): what a
                batch without padding (--tokens 200) could run; with padding it differs on the padded keys (diff shown)

  python bench/attention.py [--batch 16 32] [--tokens 48]

The diff column compares valid query rows only (padding rows are never read).
"""

from __future__ import annotations

import argparse
import torch
import torch.nn.functional as F
from timing import cuda_median_ms
from torch.nn.attention import SDPBackend, sdpa_kernel

BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, nargs="+", default=[16, 32])
    ap.add_argument("--tokens", type=int, default=48, help="valid prompt tokens of 200")
    args = ap.parse_args()
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    flex = torch.compile(flex_attention)
    dev, H, hd, images, L, Hs = "cuda", 8, 256, 2 * 256, 200, 50
    T = images + L + Hs
    print("| batch | variant | fwd+bwd (ms) | max abs diff vs sdpa_gqa |")
    print("|---|---|---|---|")
    for B in args.batch:
        valid = torch.ones(B, T, dtype=torch.bool, device=dev)
        valid[:, images + args.tokens: images + L] = False  # prompt padding
        block = torch.zeros(T, dtype=torch.long, device=dev)
        block[images + L:] = 1  # suffix: its own block (Pi0.5)
        mask = (block[None, :] <= block[:, None])[None] & valid[:, None, :] & valid[:, :, None]
        mask = mask | ~mask.any(-1, keepdim=True)  # padding rows attend everywhere (as gemma.py)
        q = torch.randn(B, H, T, hd, device=dev, dtype=torch.bfloat16, requires_grad=True)
        k = torch.randn(B, 1, T, hd, device=dev, dtype=torch.bfloat16, requires_grad=True)
        v = torch.randn(B, 1, T, hd, device=dev, dtype=torch.bfloat16, requires_grad=True)
        grad = torch.randn(B, H, T, hd, device=dev, dtype=torch.bfloat16)

        def mask_mod(b, h, qi, ki):
            return mask[b, qi, ki]

        bm = create_block_mask(mask_mod, B, None, T, T, device=dev)
        P = images + L  # prefix length
        keypad = valid[:, None, None, :]

        def split(masked: bool):
            pre = F.scaled_dot_product_attention(q[:, :, :P], k[:, :, :P], v[:, :, :P], enable_gqa=True,
                                                 attn_mask=keypad[..., :P] if masked else None)
            suf = F.scaled_dot_product_attention(q[:, :, P:], k, v, enable_gqa=True,
                                                 attn_mask=keypad if masked else None)
            return torch.cat([pre, suf], dim=2)

        def forced(backend):
            def fn():
                with sdpa_kernel([BACKENDS[backend]]):
                    return split(False)
            return fn

        variants = {
            "sdpa_gqa": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None], enable_gqa=True),
            "sdpa_expand": lambda: F.scaled_dot_product_attention(
                q, k.expand(B, H, T, hd), v.expand(B, H, T, hd), attn_mask=mask[:, None]),
            "flex": lambda: flex(q, k, v, block_mask=bm, enable_gqa=True),
            "split_mask": lambda: split(True),
            **{f"split_{b}": forced(b) for b in BACKENDS},
        }
        ref = variants["sdpa_gqa"]().float()
        rows = valid[:, None, :, None]
        for name, fn in variants.items():
            try:
                out = fn()
            except RuntimeError as e:  # a backend that does not take these shapes says why
                print(f"| {B} | {name} | unsupported: {str(e).splitlines()[0][:80]} | |", flush=True)
                continue
            diff = ((out.float() - ref) * rows).abs().max().item()

            def step(fn=fn):
                q.grad = k.grad = v.grad = None
                fn().backward(grad)

            print(f"| {B} | {name} | {cuda_median_ms(step):.2f} | {diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()
