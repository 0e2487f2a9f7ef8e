#!/usr/bin/env python3
"""PyTorch baselines for `cargo xtask bench --device cuda --torch FILE`.

The same stochastic LWTA as the PTX kernels -- Gumbel noise, hard one-hot forward
(y = x * onehot), straight-through relaxed backward through softmax((x + g) / tau) -- written
the way a PyTorch user writes it, timed in eager mode and under torch.compile at the anchor
shapes of ../shared/ANCHORS.md, in f32 and bf16. Medians of CUDA events after warm-up.
Writes JSON {"device", "torch", "results": [{shape, dtype, eager_fwd_ms, eager_fwd_bwd_ms,
compiled_fwd_ms, compiled_fwd_bwd_ms}]} after every row, so a timeout keeps what was measured.
"""
import argparse
import json
import statistics
import sys

import torch

# name, tensor shape, U, layout -- the same shapes as xtask/src/bench.rs
SHAPES = [
    ("deit_t_mlp", (256 * 197, 768), 8, "tokens"),
    ("deit_s_mlp", (128 * 197, 1536), 12, "tokens"),
    ("resnet18_layer1", (256, 64, 56, 56), 4, "nchw"),
]
DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16}
TAU = 1.67


def lwta(x, u: int, tau: float, layout: str, win_rates=None):
    """Forward value x at the sampled winner, 0 elsewhere; gradient of the relaxed softmax.
    With a list `win_rates`, appends per index of the first axis the fraction of competitions the
    largest response won (1/u: the noise picks the winners)."""
    if layout == "tokens":
        blocks = x.view(*x.shape[:-1], x.shape[-1] // u, u)
        dim = -1
    else:
        n, c, h, w = x.shape
        blocks = x.view(n, c // u, u, h, w)
        dim = 2
    uniform = torch.rand_like(blocks)
    gumbel = -torch.log(-torch.log(uniform + 1e-8) + 1e-8)
    soft = torch.softmax((blocks + gumbel) / tau, dim=dim)
    winner = soft.argmax(dim=dim, keepdim=True)
    hard = torch.zeros_like(soft).scatter_(dim, winner, 1.0)
    if win_rates is not None:
        win_rates.append((winner == blocks.argmax(dim=dim, keepdim=True)).float().flatten(1).mean(1).detach())
    mask = hard - soft.detach() + soft
    return (blocks * mask).view(x.shape)


def median_ms(fn, iters: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def measure(f, x, dy, u, layout, iters, warmup):
    def fwd():
        f(x, u, TAU, layout)

    def fwd_bwd():
        x.grad = None
        f(x, u, TAU, layout).backward(dy)

    return median_ms(fwd, iters, warmup), median_ms(fwd_bwd, iters, warmup)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--no-compile", action="store_true", help="eager only")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device visible to PyTorch", file=sys.stderr)
        return 1
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "results": []}
    compiled = None if args.no_compile else torch.compile(lwta, dynamic=False)
    print(f"{'shape':<16} {'dtype':<5} {'eager fwd':>10} {'eager f+b':>10} {'compile fwd':>12} {'compile f+b':>12}")
    for name, shape, u, layout in SHAPES:
        for dtype_name, dtype in DTYPES.items():
            gen = torch.Generator(device="cuda").manual_seed(0)
            x = torch.randn(shape, device="cuda", dtype=dtype, generator=gen).requires_grad_(True)
            dy = torch.randn(shape, device="cuda", dtype=dtype, generator=gen)
            row = {"shape": name, "dtype": dtype_name}
            row["eager_fwd_ms"], row["eager_fwd_bwd_ms"] = measure(lwta, x, dy, u, layout, args.iters, args.warmup)
            row["compiled_fwd_ms"] = row["compiled_fwd_bwd_ms"] = None
            if compiled is not None:
                try:
                    row["compiled_fwd_ms"], row["compiled_fwd_bwd_ms"] = measure(compiled, x, dy, u, layout, args.iters, args.warmup)
                except Exception as err:  # report and go on: eager numbers are still useful
                    print(f"torch.compile failed for {name} {dtype_name}: {err}", file=sys.stderr)
            report["results"].append(row)
            fmt = lambda v: "-" if v is None else f"{v:.3f}"
            print(f"{name:<16} {dtype_name:<5} {fmt(row['eager_fwd_ms']):>10} {fmt(row['eager_fwd_bwd_ms']):>10} "
                  f"{fmt(row['compiled_fwd_ms']):>12} {fmt(row['compiled_fwd_bwd_ms']):>12}", flush=True)
            if args.json:
                with open(args.json, "w") as f:
                    json.dump(report, f, indent=1)
            del x, dy
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
