//! torchvision's ResNet-18 (BasicBlock × [2, 2, 2, 2]) with configurable widths and two stems.
//! Tensor names follow torchvision (`conv1`, `bn1`, `layerK.N.conv1/bn1/conv2/bn2`,
//! `layerK.0.downsample.0/1`, `fc`). LWTA replaces every ReLU — the stem's (`act`) and both of each
//! block (`layerK.N.act1`, `layerK.N.act2`) — competing over U consecutive channels at each pixel.

use cvn_autograd::{LwtaLayout, Tensor};

use crate::config::{ResNetConfig, Stem};
use crate::error::{Error, Result};
use crate::forward::Forward;
use crate::nn::{Activation, BatchNorm2d, Conv2d, ConvShape, Conventional, Linear};
use crate::params::{Builder, Init, Params};

const BLOCKS_PER_LAYER: usize = 2;

#[derive(Debug, Clone)]
pub(crate) struct ResNet {
    in_chans: usize,
    conv1: Conv2d,
    bn1: BatchNorm2d,
    act: Activation,
    /// The ImageNet stem's 3×3 stride-2 max-pool, with its layer name.
    maxpool: Option<String>,
    layers: Vec<Layer>,
    avgpool: String,
    fc: Linear,
}

#[derive(Debug, Clone)]
struct Layer {
    name: String,
    blocks: Vec<BasicBlock>,
}

#[derive(Debug, Clone)]
struct BasicBlock {
    name: String,
    conv1: Conv2d,
    bn1: BatchNorm2d,
    act1: Activation,
    conv2: Conv2d,
    bn2: BatchNorm2d,
    downsample: Option<Downsample>,
    act2: Activation,
}

/// `downsample.0` (1×1 convolution) and `downsample.1` (BatchNorm) on the shortcut.
#[derive(Debug, Clone)]
struct Downsample {
    name: String,
    conv: Conv2d,
    bn: BatchNorm2d,
}

/// torchvision's `kaiming_normal_(mode="fan_out", nonlinearity="relu")` for convolutions.
fn kaiming_fan_out(s: &ConvShape) -> Init {
    Init::Normal((2.0 / (s.outputs * s.kernel * s.kernel) as f32).sqrt())
}

fn conv(b: &mut Builder, s: ConvShape) -> Result<Conv2d> {
    Conv2d::new(b, s, kaiming_fan_out(&s), None)
}

impl ResNet {
    pub fn new(b: &mut Builder, c: &ResNetConfig) -> Result<Self> {
        let relu = |b: &mut Builder| Activation::new(b, Conventional::Relu, LwtaLayout::Nchw, c.competition);
        let stem = match c.stem {
            Stem::Imagenet => ConvShape { inputs: c.in_chans, outputs: c.widths[0], kernel: 7, stride: 2, padding: 3 },
            Stem::Small => ConvShape { inputs: c.in_chans, outputs: c.widths[0], kernel: 3, stride: 1, padding: 1 },
        };
        let conv1 = conv(&mut b.sub("conv1"), stem)?;
        let bn1 = BatchNorm2d::new(&mut b.sub("bn1"), c.widths[0], c.bn_eps)?;
        let act = relu(&mut b.sub("act"));
        let maxpool = (c.stem == Stem::Imagenet).then(|| b.sub("maxpool").layer());
        let mut layers = Vec::new();
        let mut inputs = c.widths[0];
        for (k, &width) in c.widths.iter().enumerate() {
            let mut lb = b.sub(format!("layer{}", k + 1));
            let mut blocks = Vec::new();
            for i in 0..BLOCKS_PER_LAYER {
                let stride = if k > 0 && i == 0 { 2 } else { 1 };
                let mut bb = lb.sub(i);
                let conv1 = conv(&mut bb.sub("conv1"), ConvShape { inputs, outputs: width, kernel: 3, stride, padding: 1 })?;
                let bn1 = BatchNorm2d::new(&mut bb.sub("bn1"), width, c.bn_eps)?;
                let act1 = relu(&mut bb.sub("act1"));
                let conv2 = conv(&mut bb.sub("conv2"), ConvShape { inputs: width, outputs: width, kernel: 3, stride: 1, padding: 1 })?;
                let bn2 = BatchNorm2d::new(&mut bb.sub("bn2"), width, c.bn_eps)?;
                let downsample = if stride != 1 || inputs != width {
                    let mut db = bb.sub("downsample");
                    let conv = conv(&mut db.sub(0), ConvShape { inputs, outputs: width, kernel: 1, stride, padding: 0 })?;
                    let bn = BatchNorm2d::new(&mut db.sub(1), width, c.bn_eps)?;
                    Some(Downsample { name: db.layer(), conv, bn })
                } else {
                    None
                };
                let act2 = relu(&mut bb.sub("act2"));
                blocks.push(BasicBlock { name: bb.layer(), conv1, bn1, act1, conv2, bn2, downsample, act2 });
                inputs = width;
            }
            layers.push(Layer { name: lb.layer(), blocks });
        }
        let avgpool = b.sub("avgpool").layer();
        // PyTorch's default Linear initialisation (torchvision keeps it for `fc`).
        let bound = Init::Uniform(1.0 / (inputs as f32).sqrt());
        let fc = Linear::new(&mut b.sub("fc"), inputs, c.num_classes, bound, Some(bound))?;
        Ok(Self { in_chans: c.in_chans, conv1, bn1, act, maxpool, layers, avgpool, fc })
    }

    pub fn forward(&self, p: &mut Params, x: &Tensor, ctx: &mut Forward) -> Result<Tensor> {
        if x.rank() != 4 || x.shape()[1] != self.in_chans {
            return Err(Error::Config {
                what: "ResNet input",
                detail: format!("expected [N, {}, H, W], got {:?}", self.in_chans, x.shape()),
            });
        }
        let mut h = self.conv1.forward(p, x, ctx)?;
        h = self.bn1.forward(p, &h, ctx)?;
        h = self.act.forward(&h, ctx)?;
        if let Some(name) = &self.maxpool {
            h = h.max_pool2d(3, 2, 1)?;
            ctx.record(name, &h);
        }
        for layer in &self.layers {
            for block in &layer.blocks {
                h = block.forward(p, &h, ctx)?;
            }
            ctx.record(&layer.name, &h);
        }
        let pooled = h.global_avg_pool2d()?;
        ctx.record(&self.avgpool, &pooled);
        self.fc.forward(p, &pooled, ctx)
    }
}

impl BasicBlock {
    fn forward(&self, p: &mut Params, x: &Tensor, ctx: &mut Forward) -> Result<Tensor> {
        let h = self.conv1.forward(p, x, ctx)?;
        let h = self.act1.forward(&self.bn1.forward(p, &h, ctx)?, ctx)?;
        let h = self.bn2.forward(p, &self.conv2.forward(p, &h, ctx)?, ctx)?;
        let shortcut = match &self.downsample {
            Some(d) => {
                let s = d.bn.forward(p, &d.conv.forward(p, x, ctx)?, ctx)?;
                ctx.record(&d.name, &s);
                s
            }
            None => x.clone(),
        };
        let y = self.act2.forward(&h.add(&shortcut)?, ctx)?;
        ctx.record(&self.name, &y);
        Ok(y)
    }
}
