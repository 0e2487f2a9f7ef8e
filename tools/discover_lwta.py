"""The LWTA layer of DISCOVER in Rust for PyTorch, and a loader that runs an exported run folder in
timm / torchvision in one call:

    import discover_lwta                       # tools/ on sys.path
    model = discover_lwta.load_run("runs/resnet-u2", mode="deterministic")
    logits = model(x)                          # x normalised as the project does, e.g. Fashion-MNIST (x/255-0.2860)/0.3530

## The noise contract (what the Rust code computes)
A layer groups its channels in blocks of `U` consecutive ones — the last axis of tokens `[..., C]`,
axis 1 of NCHW maps `[N, C, H, W]` (competitors at the same pixel). Per block, with `u` uniform in
[0, 1) and `g = -log(-log(u + 1e-8) + 1e-8)` (Gumbel noise):
* the winner is the first `j` maximising `x_j + g_j` (the hard forward does not depend on tau);
  the output is `x` at the winner and 0 elsewhere (sparsity exactly 1/U);
* backward (training) is the straight-through hard Gumbel-softmax through
  `s = softmax((x + g) / tau)`: `dx_j = dy_j h_j + (s_j / tau)(dy_j x_j - sum_i dy_i x_i s_i)`;
  tau = `tau_train` (1.67) in training and `tau_test` (0.01) when sampling at inference;
* `deterministic` mode uses `g = 0` (argmax winners): exactly the Rust `--deterministic` pass.

The Rust code draws `u` from Philox4x32-10 counters (seed, step, layer slot), so its sampled
winners are reproducible from a run's seed; this module draws `u` with `torch.rand`, the same
distribution but other numbers. Sampled passes therefore agree in distribution, deterministic ones
exactly.

## Run folders
`model.safetensors` holds the weights under timm / torchvision names and the configuration JSON in
its `config` metadata; it loads with `load_state_dict(strict=True)`. For ResNet CVNs,
`argmax_bn.safetensors` holds the BatchNorm statistics of the deterministic pass (re-estimated with
argmax winners) under the same buffer names; `load_run(..., mode="deterministic")` puts them in.
"""

import functools
import json
import os

import torch
from torch import nn

MODES = ("train", "sample", "deterministic")


class LWTA(nn.Module):
    """Stochastic local winner-takes-all over `competitors` consecutive channels.

    `layout`: "tokens" (competitors on the last axis) or "nchw" (axis 1). `mode`: "train",
    "sample" or "deterministic"; `None` follows `self.training` (train / sample), as DISCOVER does.
    """

    def __init__(self, competitors, layout="tokens", tau_train=1.67, tau_test=0.01, mode=None):
        super().__init__()
        if competitors < 1:
            raise ValueError(f"competitors must be >= 1, got {competitors}")
        if layout not in ("tokens", "nchw"):
            raise ValueError(f"layout must be 'tokens' or 'nchw', got {layout!r}")
        if mode is not None and mode not in MODES:
            raise ValueError(f"mode must be one of {MODES} or None, got {mode!r}")
        self.competitors, self.layout, self.tau_train, self.tau_test, self.mode = competitors, layout, tau_train, tau_test, mode

    def extra_repr(self):
        return f"competitors={self.competitors}, layout={self.layout}, mode={self.mode}"

    def forward(self, x, uniform=None):
        """`uniform`: the draws `u` (shape of `x`) instead of `torch.rand`, e.g. to replay a case."""
        u = self.competitors
        if u == 1:
            return x
        mode = self.mode or ("train" if self.training else "sample")
        axis = -1 if self.layout == "tokens" else 1
        channels = x.shape[axis]
        if channels % u:
            raise ValueError(f"{channels} channels are not divisible by U = {u}")
        # Blocks of U consecutive channels on their own axis, right after the channel-group axis.
        shape = list(x.shape)
        axis = axis % x.dim()
        blocks = x.reshape(shape[:axis] + [channels // u, u] + shape[axis + 1:])
        comp = axis + 1
        if mode == "deterministic":
            logits = blocks
        else:
            noise = torch.rand_like(blocks) if uniform is None else uniform.reshape(blocks.shape).to(blocks.dtype)
            logits = blocks - torch.log(-torch.log(noise + 1e-8) + 1e-8)
        index = logits.argmax(dim=comp, keepdim=True)  # the first maximum, as the Rust code
        hard = torch.zeros_like(blocks).scatter_(comp, index, 1.0)
        if mode == "train" and torch.is_grad_enabled():
            soft = torch.softmax(logits / self.tau_train, dim=comp)
            mask = hard - soft.detach() + soft
        else:
            mask = hard
        return (blocks * mask).reshape(shape)


def set_mode(model, mode):
    """Sets the mode of every LWTA layer of `model` ("train", "sample", "deterministic" or None)."""
    for m in model.modules():
        if isinstance(m, LWTA):
            if mode is not None and mode not in MODES:
                raise ValueError(f"mode must be one of {MODES} or None, got {mode!r}")
            m.mode = mode
    return model


def replace_activations(model, config, mode=None):
    """Puts LWTA layers with the configuration's U in place of the GELU (timm ViT MLPs) or ReLU
    (torchvision ResNet: the stem's and each BasicBlock's, which it applies twice) activations."""
    u = config.get("competitors", 1)
    if u == 1:
        return model
    kw = dict(tau_train=config.get("tau_train", 1.67), tau_test=config.get("tau_test", 0.01), mode=mode)
    if config["arch"] == "vit":
        for block in model.blocks:
            block.mlp.act = LWTA(u, "tokens", **kw)
    else:
        model.relu = LWTA(u, "nchw", **kw)
        for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
            for block in layer:
                block.relu = LWTA(u, "nchw", **kw)
    return model


def build(config):
    """An untrained timm VisionTransformer or torchvision ResNet-18 for a run's `config` JSON."""
    if config["arch"] == "vit":
        import timm.models.vision_transformer as vt

        return vt.VisionTransformer(
            img_size=config["img_size"], patch_size=config["patch_size"], in_chans=config["in_chans"],
            num_classes=config["num_classes"], embed_dim=config["embed_dim"], depth=config["depth"],
            num_heads=config["num_heads"], mlp_ratio=config["mlp_ratio"], qkv_bias=config.get("qkv_bias", True),
            norm_layer=functools.partial(nn.LayerNorm, eps=config.get("layer_norm_eps", 1e-6)),
        )
    if config["arch"] != "resnet18":
        raise ValueError(f"unknown arch {config['arch']!r} (expected 'vit' or 'resnet18')")
    from torchvision.models.resnet import BasicBlock, ResNet

    widths, eps = config["widths"], config.get("bn_eps", 1e-5)
    model = ResNet(BasicBlock, [2, 2, 2, 2], num_classes=config["num_classes"],
                   norm_layer=functools.partial(nn.BatchNorm2d, eps=eps))
    # torchvision fixes the widths at 64/128/256/512; rebuild the layers with the run's.
    if config.get("stem", "imagenet") == "small":
        model.conv1 = nn.Conv2d(config["in_chans"], widths[0], 3, 1, 1, bias=False)
        model.maxpool = nn.Identity()
    else:
        model.conv1 = nn.Conv2d(config["in_chans"], widths[0], 7, 2, 3, bias=False)
    model.bn1 = nn.BatchNorm2d(widths[0], eps=eps)
    model.inplanes = widths[0]
    model.layer1 = model._make_layer(BasicBlock, widths[0], 2)
    model.layer2 = model._make_layer(BasicBlock, widths[1], 2, stride=2)
    model.layer3 = model._make_layer(BasicBlock, widths[2], 2, stride=2)
    model.layer4 = model._make_layer(BasicBlock, widths[3], 2, stride=2)
    model.fc = nn.Linear(widths[3], config["num_classes"])
    return model


def read_config(path):
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
    if "config" not in meta:
        raise ValueError(f"{path}: no `config` metadata (not a DISCOVER-in-Rust model file)")
    return json.loads(meta["config"])


def load_run(run_dir, mode="deterministic", argmax_bn=True):
    """The model of a run folder in timm / torchvision, weights loaded strictly, in eval mode, its
    LWTA layers in `mode`. With `argmax_bn` (default) and mode "deterministic", a ResNet CVN gets
    the run's argmax BatchNorm statistics (`argmax_bn.safetensors`), as the Rust deterministic pass."""
    from safetensors.torch import load_file

    path = os.path.join(run_dir, "model.safetensors")
    config = read_config(path)
    model = replace_activations(build(config), config, mode)
    state = load_file(path)
    bn_path = os.path.join(run_dir, "argmax_bn.safetensors")
    if argmax_bn and mode == "deterministic" and os.path.isfile(bn_path):
        stats = load_file(bn_path)
        unknown = sorted(set(stats) - set(state))
        if unknown:
            raise ValueError(f"{bn_path}: tensors the model does not have: {unknown}")
        state.update(stats)
    model.load_state_dict(state, strict=True)
    return model.eval()
