#!/usr/bin/env python3
"""The Python half of the PyTorch round trip (`tests/python_round_trip.rs` drives it):

    python3 tools/test_roundtrip.py make DIR    # .pth checkpoints as DISCOVER / torchvision save them, converted
    (the Rust test imports them into DIR/run_vit and DIR/run_resnet and writes their logits)
    python3 tools/test_roundtrip.py check DIR   # the runs in timm / torchvision give the Rust logits

`check` also runs the LWTA layer of `discover_lwta` on the project's LWTA fixture (uniform draws
supplied) against its forward and backward. Exits non-zero on any mismatch.
"""

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import discover_lwta  # noqa: E402
import pth_to_safetensors  # noqa: E402

TOLERANCE = 1e-4
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VIT = dict(arch="vit", img_size=28, patch_size=4, in_chans=1, num_classes=10, embed_dim=96, depth=4, num_heads=3,
           mlp_ratio=4.0, competitors=1)
RESNET = dict(arch="resnet18", widths=[16, 32, 64, 128], in_chans=1, num_classes=10, stem="small", competitors=1)


def make(out):
    from safetensors.torch import save_file

    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    vit = discover_lwta.build(VIT)
    # As DISCOVER's training script saves: the weights beside an argparse.Namespace (weights_only=False).
    torch.save({"model": vit.state_dict(), "args": argparse.Namespace(model="vit-fmnist", U=4)}, os.path.join(out, "vit.pth"))
    resnet = discover_lwta.build(RESNET)
    for m in resnet.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
    torch.save(resnet.state_dict(), os.path.join(out, "resnet.pth"))
    save_file({"x": torch.randn(8, 1, 28, 28)}, os.path.join(out, "x.safetensors"))
    pth_to_safetensors.convert(os.path.join(out, "vit.pth"), os.path.join(out, "vit.safetensors"), trust_pickle=True)
    pth_to_safetensors.convert(os.path.join(out, "resnet.pth"), os.path.join(out, "resnet.safetensors"))
    print(f"wrote {out}/vit.safetensors and {out}/resnet.safetensors")


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def check_runs(out):
    from safetensors.torch import load_file

    x = load_file(os.path.join(out, "x.safetensors"))["x"]
    failures = []
    for run in ("run_vit", "run_resnet"):
        model = discover_lwta.load_run(os.path.join(out, run), mode="deterministic")
        with torch.no_grad():
            logits = model(x)
        expected = load_file(os.path.join(out, f"{run}_logits.safetensors"))["logits"]
        err = rel_err(logits, expected)
        print(f"{run}: max rel. err. {err:.2e} against the Rust logits")
        if not err <= TOLERANCE:
            failures.append(f"{run}: {err:.3e}")
        if not any(isinstance(m, discover_lwta.LWTA) for m in model.modules()):
            failures.append(f"{run}: no LWTA layer was put in")
    return failures


def check_lwta_fixture():
    from safetensors.torch import load_file

    cases = load_file(os.path.join(ROOT, "tests", "fixtures", "lwta", "lwta_cases.safetensors"))
    failures = []
    for name in sorted({k.rsplit(".", 1)[0] for k in cases}):
        c = {k.rsplit(".", 1)[1]: v for k, v in cases.items() if k.rsplit(".", 1)[0] == name}
        layer = discover_lwta.LWTA(int(c["U"].item()), "nchw" if int(c["conv"].item()) else "tokens",
                                   tau_train=float(c["tau"].item()), mode="train")
        x = c["x"].clone().requires_grad_(True)
        y = layer(x, uniform=c["u"])
        y.backward(c["gy"])
        for what, got, want in (("y", y.detach(), c["y"]), ("gx", x.grad, c["gx"])):
            err = rel_err(got, want) if want.abs().max() > 0 else got.abs().max().item()
            if not err <= 1e-6:
                failures.append(f"lwta {name}.{what}: {err:.3e}")
    print(f"LWTA fixture: {len(failures)} mismatches")
    return failures


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("step", choices=["make", "check"])
    parser.add_argument("dir")
    a = parser.parse_args()
    if a.step == "make":
        make(a.dir)
        return 0
    failures = check_runs(a.dir) + check_lwta_fixture()
    for f in failures:
        print("FAIL", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
