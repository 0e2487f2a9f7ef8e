"""Recipe sweep for `vit-fmnist` in PyTorch: many CVN/GELU variants trained side by side on one GPU.

Why: a 30-epoch `cargo xtask train` pair takes two hours on the 2-core CPU, so recipe questions
("does the CVN catch its GELU twin with more epochs? with another lr?") are answered here first, on a
lent GPU, with a replica of the Rust recipe, and only the winning recipe is run in Rust.

The replica follows `cvn-models`: timm ViT (28 px, patch 4, dim 96, depth 4, 3 heads, MLP x4), timm
init, LWTA on the MLP hidden activation only (`torch_lwta.lwta`: straight-through hard Gumbel-softmax,
tau 1.67), AdamW (0.9, 0.999, eps 1e-8; decay on weights only), linear warm-up for one
epoch then cosine to 1% of the peak, label smoothing, random crop (pad 2) + flip, batch 128, the last
partial batch dropped. Evaluation: deterministic (argmax) top-1 after each epoch; at a model's last
epoch the class probabilities of `--samples` sampled passes averaged, plus the argmax win rate per block
(sampled competitions won by the largest response; 1/U = noise decides).

K models are stacked along a leading axis (batched matmuls) so that one process fills the GPU. Each
variant's lr, weight decay, label smoothing, augmentation, U and epochs are its own; every model sees
the same batches in the same order.

    python3 benches/torch_vit_recipes.py --data DIR --variants "u4:e10" "u1:e10" "u4:e30,lr=2e-3"

A variant is `uU:eE` followed by optional `,lr=..,wd=..,ls=..,aug=0|1,seed=..`.
"""
import argparse
import gzip
import json
import math
import os
import struct
import sys
import time

import torch
import torch.nn.functional as F

from torch_lwta import lwta as lwta_sampled

DIM, DEPTH, HEADS, HIDDEN, PATCH, CLASSES = 96, 4, 3, 384, 4, 10
TOKENS = (28 // PATCH) ** 2 + 1
MEAN, STD = 0.2860, 0.3530
TAU_TRAIN = 1.67


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = struct.unpack(">I", data[:4])[0]
    dims = magic & 0xFF
    shape = struct.unpack(">" + "I" * dims, data[4 : 4 + 4 * dims])
    return torch.frombuffer(bytearray(data[4 + 4 * dims :]), dtype=torch.uint8).reshape(shape)


def load(data_dir, split, device):
    prefix = "train" if split == "train" else "t10k"
    x = read_idx(os.path.join(data_dir, f"{prefix}-images-idx3-ubyte.gz")).float().div(255.0)
    y = read_idx(os.path.join(data_dir, f"{prefix}-labels-idx1-ubyte.gz")).long()
    return ((x - MEAN) / STD).unsqueeze(1).to(device), y.to(device)


def parse_variant(text):
    head, *opts = text.split(",")
    u, e = head.split(":")
    v = {"name": text, "U": int(u[1:]), "epochs": int(e[1:]), "lr": 1e-3, "wd": 0.05, "ls": 0.1, "aug": 1, "seed": 0}
    for opt in opts:
        key, value = opt.split("=")
        if key not in v:
            sys.exit(f"variant {text!r}: unknown option {key!r} (lr, wd, ls, aug, seed)")
        v[key] = type(v[key])(float(value)) if key not in ("aug", "seed") else int(value)
    if HIDDEN % v["U"]:
        sys.exit(f"variant {text!r}: U={v['U']} does not divide the MLP width {HIDDEN}")
    return v


def trunc_normal(shape, std, gen):
    return torch.nn.init.trunc_normal_(torch.empty(shape), std=std, a=-2 * std, b=2 * std, generator=gen)


def init_model(seed):
    """One model's parameters: name -> (tensor, decays)."""
    gen = torch.Generator().manual_seed(seed)
    p = {}
    bound = 1.0 / math.sqrt(PATCH * PATCH)
    p["patch.w"] = (torch.empty(PATCH * PATCH, DIM).uniform_(-bound, bound, generator=gen), True)
    p["patch.b"] = (torch.empty(1, DIM).uniform_(-bound, bound, generator=gen), False)
    p["cls"] = (torch.randn(1, DIM, generator=gen) * 1e-6, False)
    p["pos"] = (trunc_normal((TOKENS, DIM), 0.02, gen), False)
    for i in range(DEPTH):
        for ln in ("norm1", "norm2"):
            p[f"{i}.{ln}.w"] = (torch.ones(1, DIM), False)
            p[f"{i}.{ln}.b"] = (torch.zeros(1, DIM), False)
        for name, fin, fout in (("qkv", DIM, 3 * DIM), ("proj", DIM, DIM), ("fc1", DIM, HIDDEN), ("fc2", HIDDEN, DIM)):
            p[f"{i}.{name}.w"] = (trunc_normal((fin, fout), 0.02, gen), True)
            p[f"{i}.{name}.b"] = (torch.zeros(1, fout), False)
    p["norm.w"] = (torch.ones(1, DIM), False)
    p["norm.b"] = (torch.zeros(1, DIM), False)
    p["head.w"] = (trunc_normal((DIM, CLASSES), 0.02, gen), True)
    p["head.b"] = (torch.zeros(1, CLASSES), False)
    return p


def lwta(h, U, mode, tau, win_rates):
    """h [K', N, HIDDEN] -> same; mode 'sample' (straight-through, the bench's code) or 'argmax'."""
    if mode == "sample":
        return lwta_sampled(h, U, tau, "tokens", win_rates)
    blocks = h.unflatten(-1, (HIDDEN // U, U))
    return (blocks * F.one_hot(blocks.argmax(-1), U).to(h.dtype)).flatten(-2)


class Stack:
    """K models' parameters stacked on a leading axis."""

    def __init__(self, variants, device):
        models = [init_model(v["seed"]) for v in variants]
        self.params = {n: torch.stack([m[n][0] for m in models]).to(device).requires_grad_() for n in models[0]}
        self.decays = {n: decays for n, (_, decays) in models[0].items()}
        self.groups = {}
        for k, v in enumerate(variants):
            self.groups.setdefault(v["U"], []).append(k)
        self.groups = {u: torch.tensor(ks, device=device) for u, ks in self.groups.items()}
        self.K = len(variants)

    def mlp_act(self, h, mode, tau, win_rates):
        out = torch.empty_like(h)
        for u, ks in self.groups.items():
            part = h.index_select(0, ks)
            part = F.gelu(part) if u == 1 else lwta(part, u, mode, tau, win_rates.setdefault(u, []) if win_rates is not None else None)
            out = out.index_copy(0, ks, part)
        return out

    def forward(self, x, mode, tau=TAU_TRAIN, win_rates=None):
        """x [K, N, 1, 28, 28] -> logits [K, N, CLASSES]."""
        p = self.params
        K, N = x.shape[:2]
        patches = x.reshape(K, N, 28 // PATCH, PATCH, 28 // PATCH, PATCH).permute(0, 1, 2, 4, 3, 5)
        patches = patches.reshape(K, N * (TOKENS - 1), PATCH * PATCH)
        t = torch.baddbmm(p["patch.b"], patches, p["patch.w"]).reshape(K, N, TOKENS - 1, DIM)
        cls = p["cls"].unsqueeze(1).expand(K, N, 1, DIM)
        h = (torch.cat([cls, t], 2) + p["pos"].unsqueeze(1)).reshape(K, N * TOKENS, DIM)

        def ln(z, name):
            return F.layer_norm(z, (DIM,), eps=1e-6) * p[name + ".w"] + p[name + ".b"]

        for i in range(DEPTH):
            qkv = torch.baddbmm(p[f"{i}.qkv.b"], ln(h, f"{i}.norm1"), p[f"{i}.qkv.w"])
            qkv = qkv.reshape(K * N, TOKENS, 3, HEADS, DIM // HEADS).permute(2, 0, 3, 1, 4)
            a = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
            a = a.transpose(1, 2).reshape(K, N * TOKENS, DIM)
            h = h + torch.baddbmm(p[f"{i}.proj.b"], a, p[f"{i}.proj.w"])
            m = torch.baddbmm(p[f"{i}.fc1.b"], ln(h, f"{i}.norm2"), p[f"{i}.fc1.w"])
            m = self.mlp_act(m, mode, tau, win_rates)
            h = h + torch.baddbmm(p[f"{i}.fc2.b"], m, p[f"{i}.fc2.w"])
        cls_out = ln(h.reshape(K, N, TOKENS, DIM)[:, :, 0], "norm")
        return torch.baddbmm(p["head.b"], cls_out, p["head.w"])


class AdamW:
    """timm/PyTorch AdamW with a per-model lr and weight decay ([K] tensors)."""

    def __init__(self, stack, wd):
        self.stack, self.wd, self.t = stack, wd, 0
        self.m = {n: torch.zeros_like(v) for n, v in stack.params.items()}
        self.v = {n: torch.zeros_like(v) for n, v in stack.params.items()}

    @torch.no_grad()
    def step(self, lr):
        self.t += 1
        b1, b2, eps = 0.9, 0.999, 1e-8
        c1, c2 = 1 - b1**self.t, 1 - b2**self.t
        for n, p in self.stack.params.items():
            shape = (-1,) + (1,) * (p.dim() - 1)
            g = p.grad
            if self.stack.decays[n]:
                p.mul_(1 - (lr * self.wd).view(shape))
            self.m[n].lerp_(g, 1 - b1)
            self.v[n].mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = (self.v[n] / c2).sqrt_().add_(eps)
            p.addcdiv_(self.m[n] * (lr / c1).view(shape), denom, value=-1.0)
            p.grad = None


def augment(x, gen):
    """Random crop 28 from the image zero-padded by 2, then flip with probability 1/2 (per image).
    Zero padding is in pixel space, i.e. -MEAN/STD after normalisation (as the Rust transform)."""
    N = x.shape[0]
    padded = F.pad(x, (2, 2, 2, 2), value=-MEAN / STD)
    dy = torch.randint(0, 5, (N,), device=x.device, generator=gen)
    dx = torch.randint(0, 5, (N,), device=x.device, generator=gen)
    rows = (dy[:, None] + torch.arange(28, device=x.device)[None]).view(N, 1, 28, 1).expand(N, 1, 28, 32)
    out = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(28, device=x.device)[None]).view(N, 1, 1, 28).expand(N, 1, 28, 28)
    out = out.gather(3, cols)
    flip = torch.rand(N, device=x.device, generator=gen) < 0.5
    return torch.where(flip.view(N, 1, 1, 1), out.flip(3), out)


def lr_at(step, steps_per_epoch, v):
    warm = steps_per_epoch
    total = v["epochs"] * steps_per_epoch
    if step >= total:
        return 0.0
    if step < warm:
        return v["lr"] * (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    final = 0.01
    return v["lr"] * (final + (1 - final) * 0.5 * (1 + math.cos(math.pi * progress)))


@torch.no_grad()
def evaluate(stack, x, y, mode, samples=1, win_rates=None):
    K = stack.K
    correct = torch.zeros(K, device=x.device)
    for start in range(0, x.shape[0], 1000):
        xb = x[start : start + 1000].unsqueeze(0).expand(K, -1, -1, -1, -1)
        probs = 0
        for _ in range(samples):
            probs = probs + stack.forward(xb, mode, win_rates=win_rates).softmax(-1)
        correct += (probs.argmax(-1) == y[start : start + 1000]).float().sum(1)
    return (correct / x.shape[0]).tolist()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="folder with the four Fashion-MNIST .gz IDX files")
    ap.add_argument("--variants", nargs="+", required=True)
    ap.add_argument("--samples", type=int, default=6)
    ap.add_argument("--train-limit", type=int, default=0, help="first N training images (smoke tests)")
    ap.add_argument("--test-limit", type=int, default=0, help="first N test images (smoke tests)")
    ap.add_argument("--out", default="vit_recipes.jsonl")
    args = ap.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    # TF32 matmuls: recipe trends, not bit-level parity, are the point here (about 2x faster).
    torch.backends.cuda.matmul.allow_tf32 = True
    variants = [parse_variant(t) for t in args.variants]
    xtr, ytr = load(args.data, "train", device)
    xte, yte = load(args.data, "test", device)
    if args.train_limit:
        xtr, ytr = xtr[: args.train_limit], ytr[: args.train_limit]
    if args.test_limit:
        xte, yte = xte[: args.test_limit], yte[: args.test_limit]
    torch.manual_seed(0)
    stack = Stack(variants, device)
    opt = AdamW(stack, torch.tensor([v["wd"] for v in variants], device=device))
    ls = torch.tensor([v["ls"] for v in variants], device=device)
    aug = torch.tensor([bool(v["aug"]) for v in variants], device=device).view(-1, 1, 1, 1, 1)
    gen = torch.Generator(device=device).manual_seed(0)
    batch = 128
    spe = xtr.shape[0] // batch
    max_epochs = max(v["epochs"] for v in variants)
    results = {v["name"]: {"variant": v, "epoch_top1": []} for v in variants}
    out = open(args.out, "w")
    t0 = time.time()
    step = 0
    for epoch in range(1, max_epochs + 1):
        order = torch.randperm(xtr.shape[0], device=device, generator=gen)
        for b in range(spe):
            idx = order[b * batch : (b + 1) * batch]
            xb, yb = xtr[idx], ytr[idx]
            xa = augment(xb, gen)
            xk = torch.where(aug, xa.unsqueeze(0), xb.unsqueeze(0))
            logits = stack.forward(xk, "sample")
            logp = logits.log_softmax(-1)
            nll = -logp.gather(-1, yb.view(1, -1, 1).expand(stack.K, -1, 1)).squeeze(-1).mean(1)
            smooth = -logp.mean(-1).mean(1)
            loss = ((1 - ls) * nll + ls * smooth).sum()
            loss.backward()
            lr = torch.tensor([lr_at(step, spe, v) for v in variants], device=device)
            opt.step(lr)
            step += 1
        det = evaluate(stack, xte, yte, "argmax")
        for v, acc in zip(variants, det):
            r = results[v["name"]]
            if epoch <= v["epochs"]:
                r["epoch_top1"].append(acc)
        finishing = [k for k, v in enumerate(variants) if v["epochs"] == epoch]
        if finishing:
            win_rates = {}
            sampled = evaluate(stack, xte, yte, "sample", samples=args.samples, win_rates=win_rates)
            for k in finishing:
                v = variants[k]
                r = results[v["name"]]
                r["top1_deterministic"] = det[k]
                if v["U"] > 1:
                    r["top1_sampled"] = sampled[k]
                    rows = win_rates[v["U"]]
                    pos = (stack.groups[v["U"]] == k).nonzero().item()
                    per_block = torch.stack([s[pos] for s in rows]).view(-1, DEPTH).mean(0)
                    r["argmax_win_rate"] = [round(w, 3) for w in per_block.tolist()]
                r["seconds"] = time.time() - t0
                out.write(json.dumps(r) + "\n")
                out.flush()
        # One line per epoch as well, so that a run cut off by its time limit still leaves its curves.
        out.write(json.dumps({"epoch": epoch, "seconds": time.time() - t0, "top1_deterministic": dict(zip(args.variants, det))}) + "\n")
        out.flush()
        print(f"epoch {epoch:3d} {time.time() - t0:7.1f}s " + " ".join(f"{a:.4f}" for a in det), flush=True)
    print("\nvariant                         det     sampled  win rates")
    for v in variants:
        r = results[v["name"]]
        print(f"{v['name']:30s} {r['top1_deterministic']:.4f}  {r.get('top1_sampled', float('nan')):.4f}  {r.get('argmax_win_rate', '')}")


if __name__ == "__main__":
    main()
