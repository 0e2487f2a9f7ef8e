#!/usr/bin/env python3
"""PyTorch CPU baselines for `cargo xtask bench --device cpu` (the side-by-side CPU bench).

A server: reads one JSON request per line on stdin, runs that workload, and answers one JSON line on
stdout, so the Rust side can alternate with it workload by workload (ours, PyTorch, ours, ...)
while each side keeps its models built. xtask/src/bench/cpu.rs sends every size, so the shapes and
settings live in one place; a request is

    {"kind": KIND, ...workload fields..., "warmup": W, "min_iters": I, "seconds": S}

and the answer {"ok": true, "median_s": seconds per call, "iters": N, "info": {...}} or
{"ok": false, "error": "..."}. Timing: W untimed calls, then timed calls until at least I were made
and S seconds have passed; the median of the per-call wall times (time.perf_counter).

Kinds (what a PyTorch user writes for the same work):
* "train_step": {"config": a model configuration as cvn-models serialises it, "input": [C, H, W],
  "batch", "lr", "weight_decay", "label_smoothing"} -- timm VisionTransformer / torchvision
  ResNet-18 built by tools/discover_lwta.py (U > 1: its LWTA layers, DISCOVER's stochastic
  competition), one step of forward, cross-entropy with label smoothing, backward, torch.optim.AdamW.
* "clip_image": {"clip_config": CLIPConfig JSON, "batch"} -- transformers CLIPModel with random
  weights, get_image_features on random pixels, under inference_mode.
* "clip_text": {"clip_config", "ids": token-id rows, "text_batch"} -- get_text_features over the
  rows the way the Rust tower encodes them (sorted by end-of-text position, `text_batch` rows at a
  time, each batch cut after its last end-of-text token; the causal mask makes the cut exact).
* "soft_wpmi": {"images", "concepts", "neurons", "top_k", "a", "lam", "min_prob", "p_start",
  "p_end"} -- CLIP-Dissect's similarity.soft_wpmi (its loop over neurons), uniform inputs in the
  ranges the Rust bench uses.
* "activation": {"op": "lwta" | "gelu" | "relu", "layout": "tokens" | "nchw", "shape", "u", "tau",
  "backward": bool} -- forward with autograd recording (x requires grad), or forward then
  backward(dy); LWTA is tools/discover_lwta.LWTA in train mode.

`--threads N` sets torch.set_num_threads (the Rust side passes its rayon thread count). A line
`{"kind": "hello"}` answers with the versions and thread count without running anything.
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import discover_lwta  # noqa: E402  (the project's PyTorch LWTA and model builders)

_cache = {}


def cached(key, make):
    """Builds each model / input once per process (keyed by its request fields)."""
    if key not in _cache:
        _cache[key] = make()
    return _cache[key]


def timed(fn, warmup, min_iters, seconds):
    for _ in range(warmup):
        fn()
    times, start = [], time.perf_counter()
    while len(times) < max(min_iters, 1) or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), len(times)


def train_step(req):
    config = req["config"]

    def make():
        torch.manual_seed(0)
        model = discover_lwta.replace_activations(discover_lwta.build(config), config).train()
        opt = torch.optim.AdamW(model.parameters(), lr=req["lr"], weight_decay=req["weight_decay"])
        x = torch.randn(req["batch"], *req["input"])
        y = torch.arange(req["batch"]) % config["num_classes"]
        return model, opt, x, y

    model, opt, x, y = cached(("train", json.dumps(config, sort_keys=True), req["batch"]), make)
    smoothing = req["label_smoothing"]

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y, label_smoothing=smoothing)
        loss.backward()
        opt.step()

    return step, {}


def clip_model(clip_config):
    from transformers import CLIPConfig, CLIPModel

    def make():
        torch.manual_seed(0)
        return CLIPModel(CLIPConfig(**clip_config)).eval()

    return cached(("clip", json.dumps(clip_config, sort_keys=True)), make)


def features(out):
    """transformers 4 returns the projected features, 5 a ModelOutput holding them."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def clip_image(req):
    model = clip_model(req["clip_config"])
    size = model.config.vision_config.image_size
    pixels = cached(("pixels", req["batch"], size), lambda: torch.randn(req["batch"], 3, size, size))

    def run():
        with torch.inference_mode():
            features(model.get_image_features(pixel_values=pixels))

    return run, {"image_size": size}


def clip_text(req):
    model = clip_model(req["clip_config"])
    eos = model.config.text_config.eos_token_id
    ids = req["ids"]
    ends = [row.index(eos) for row in ids]
    order = sorted(range(len(ids)), key=lambda i: ends[i])
    batches = []
    for start in range(0, len(order), req["text_batch"]):
        rows = order[start:start + req["text_batch"]]
        length = max(ends[i] for i in rows) + 1
        batches.append(torch.tensor([ids[i][:length] for i in rows], dtype=torch.long))

    def run():
        with torch.inference_mode():
            for batch in batches:
                features(model.get_text_features(input_ids=batch))

    tokens = sum(b.numel() for b in batches)
    return run, {"positions_per_concept": tokens / len(ids)}


def soft_wpmi(clip_feats, target_feats, top_k=100, a=10, lam=1, device="cpu", min_prob=1e-7, p_start=0.998, p_end=0.97):
    """CLIP-Dissect's `similarity.soft_wpmi` (its tqdm progress bar and cuda.empty_cache left out)."""
    with torch.no_grad():
        clip_feats = torch.nn.functional.softmax(a * clip_feats, dim=1)
        inds = torch.topk(target_feats, dim=0, k=top_k)[1]
        prob_d_given_e = []
        p_in_examples = p_start - (torch.arange(start=0, end=top_k) / top_k * (p_start - p_end)).unsqueeze(1).to(device)
        for orig_id in range(target_feats.shape[1]):
            curr_clip_feats = clip_feats.gather(0, inds[:, orig_id:orig_id + 1].expand(-1, clip_feats.shape[1])).to(device)
            curr_p_d_given_e = 1 + p_in_examples * (curr_clip_feats - 1)
            curr_p_d_given_e = torch.sum(torch.log(curr_p_d_given_e + min_prob), dim=0, keepdim=True)
            prob_d_given_e.append(curr_p_d_given_e)
        prob_d_given_e = torch.cat(prob_d_given_e, dim=0)
        # logsumexp trick to avoid underflow
        prob_d = torch.logsumexp(prob_d_given_e, dim=0, keepdim=True) - torch.log(prob_d_given_e.shape[0] * torch.ones([1]).to(device))
        mutual_info = prob_d_given_e - lam * prob_d
    return mutual_info


def similarity(req):
    def make():
        gen = torch.Generator().manual_seed(0)
        # Image-text cosines of CLIP sit around 0.1-0.35; activations are arbitrary (as the Rust bench).
        clip = 0.1 + 0.25 * torch.rand(req["images"], req["concepts"], generator=gen)
        target = -1.0 + 4.0 * torch.rand(req["images"], req["neurons"], generator=gen)
        return clip, target

    clip, target = cached(("wpmi", req["images"], req["concepts"], req["neurons"]), make)
    params = {k: req[k] for k in ("top_k", "a", "lam", "min_prob", "p_start", "p_end")}
    return (lambda: soft_wpmi(clip, target, **params)), {}


def activation(req):
    shape, op = tuple(req["shape"]), req["op"]

    def make():
        gen = torch.Generator().manual_seed(0)
        x = (4.0 * torch.rand(shape, generator=gen) - 2.0).requires_grad_(True)
        dy = 4.0 * torch.rand(shape, generator=gen) - 2.0
        return x, dy

    x, dy = cached(("act", shape), make)
    if op == "lwta":
        f = discover_lwta.LWTA(req["u"], req["layout"], tau_train=req["tau"], mode="train")
    elif op == "gelu":
        f = F.gelu
    elif op == "relu":
        f = F.relu
    else:
        raise ValueError(f"activation op {op!r}: expected lwta, gelu or relu")

    if req["backward"]:
        def run():
            x.grad = None
            f(x).backward(dy)
    else:
        def run():
            f(x)
    return run, {}


KINDS = {"train_step": train_step, "clip_image": clip_image, "clip_text": clip_text, "soft_wpmi": similarity, "activation": activation}


def answer(req):
    kind = req.get("kind")
    if kind == "hello":
        return {"ok": True, "torch": torch.__version__, "threads": torch.get_num_threads(),
                "config": torch.__config__.parallel_info().splitlines()[:8]}
    if kind not in KINDS:
        return {"ok": False, "error": f"unknown kind {kind!r}: expected one of {sorted(KINDS)} or hello"}
    run, info = KINDS[kind](req)
    median_s, iters = timed(run, req.get("warmup", 1), req.get("min_iters", 3), req.get("seconds", 1.0))
    return {"ok": True, "median_s": median_s, "iters": iters, "info": info}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: PyTorch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            reply = answer(json.loads(line))
        except Exception as err:  # report and go on: the other workloads still measure
            reply = {"ok": False, "error": f"{type(err).__name__}: {err}"}
        print(json.dumps(reply), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
