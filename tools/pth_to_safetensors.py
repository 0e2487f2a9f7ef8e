#!/usr/bin/env python3
"""Convert a PyTorch `.pth` checkpoint (DISCOVER's code, timm, torchvision) to a plain safetensors
state dict that `cargo xtask import FILE --model PRESET --out RUN` takes.

    python3 tools/pth_to_safetensors.py checkpoint.pth model.safetensors [--key model] [--trust-pickle]

* The state dict is the file itself when it maps names to tensors, else the first of the entries
  `state_dict`, `model`, `model_ema`, `module`, `net` that does (`--key` picks one).
* Floating-point tensors are written as float32 (what the import expects); integer tensors such as
  BatchNorm's `num_batches_tracked` keep their dtype. Names are kept as they are: `import` strips a
  DistributedDataParallel `module.` prefix itself and says so.
* DISCOVER's and timm's training scripts save their `argparse.Namespace` beside the weights, which
  `torch.load(weights_only=True)` refuses. `--trust-pickle` loads such a file with
  `weights_only=False`, which runs any code the pickle holds: use it only on files you trust.
  Any `args` found are printed, to help pick `--model` and `--competitors`.

Needs `torch` and `safetensors` (pip install torch safetensors).
"""

import argparse
import sys

CANDIDATE_KEYS = ("state_dict", "model", "model_ema", "module", "net")


def is_state_dict(obj, torch):
    return isinstance(obj, dict) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def find_state_dict(obj, key, torch):
    if key is not None:
        if not isinstance(obj, dict) or key not in obj:
            keys = list(obj.keys()) if isinstance(obj, dict) else type(obj).__name__
            raise SystemExit(f"--key {key}: the checkpoint has no entry `{key}` (it has: {keys})")
        if not is_state_dict(obj[key], torch):
            raise SystemExit(f"--key {key}: the entry is not a mapping of names to tensors")
        return key, obj[key]
    if is_state_dict(obj, torch):
        return None, obj
    if isinstance(obj, dict):
        for k in CANDIDATE_KEYS:
            if k in obj and is_state_dict(obj[k], torch):
                return k, obj[k]
        raise SystemExit(f"no state dict found: none of {CANDIDATE_KEYS} is a mapping of names to tensors "
                         f"(entries: {list(obj.keys())}); name the right one with --key")
    raise SystemExit(f"the checkpoint is a {type(obj).__name__}, not a dict: save model.state_dict() instead")


def load(path, trust_pickle, torch):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError (or a RuntimeError wrapping it)
        if not trust_pickle:
            raise SystemExit(f"{path}: torch.load(weights_only=True) refused it ({type(err).__name__}: {err}).\n"
                             "DISCOVER and timm save an argparse.Namespace beside the weights; if you trust "
                             "this file, rerun with --trust-pickle (weights_only=False runs code from the pickle).")
        return torch.load(path, map_location="cpu", weights_only=False)


def convert(src, dst, key=None, trust_pickle=False):
    """Writes the state dict of `src` to `dst`; returns (entry used, number of tensors, args or None)."""
    import torch
    from safetensors.torch import save_file

    obj = load(src, trust_pickle, torch)
    used, state = find_state_dict(obj, key, torch)
    tensors = {}
    for name, t in state.items():
        t = t.detach().cpu()
        if t.is_floating_point():
            t = t.to(torch.float32)
        # Own, contiguous storage: safetensors refuses tensors that share memory (tied weights).
        tensors[name] = t.contiguous().clone()
    args = obj.get("args") if isinstance(obj, dict) else None
    metadata = {"source": str(src), "doc": "state dict converted by tools/pth_to_safetensors.py"}
    if used is not None:
        metadata["entry"] = used
    save_file(tensors, str(dst), metadata=metadata)
    return used, len(tensors), args


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", help="the .pth / .pt checkpoint")
    parser.add_argument("dst", help="the .safetensors file to write")
    parser.add_argument("--key", help="the checkpoint entry holding the state dict (default: found automatically)")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="load with weights_only=False (needed for checkpoints holding an argparse.Namespace)")
    a = parser.parse_args(argv)
    used, count, args = convert(a.src, a.dst, a.key, a.trust_pickle)
    where = f"entry `{used}`" if used else "the file itself"
    print(f"{a.dst}: {count} tensors from {where} of {a.src}")
    if args is not None:
        print(f"training arguments stored with it: {vars(args) if hasattr(args, '__dict__') else args}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
