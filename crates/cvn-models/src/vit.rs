//! timm's `VisionTransformer` (ViT, and DeiT without distillation token): class token, learned
//! position embedding, pre-norm blocks, class-token pooling. Module nesting and tensor names follow
//! timm; LWTA replaces only the MLP's hidden activation (`blocks.N.mlp.act`), as in DISCOVER.

use cvn_autograd::{LwtaLayout, Tensor};

use crate::config::VitConfig;
use crate::error::{Error, Result};
use crate::forward::Forward;
use crate::nn::{Activation, Conv2d, ConvShape, Conventional, Dropout, LayerNorm, Linear};
use crate::params::{Builder, Init, Kind, ParamId, Params};

/// timm's initialisation: linear layers truncated normal (std 0.02) with zero bias.
const LINEAR_INIT: Init = Init::TruncNormal(0.02);
const ZERO: Option<Init> = Some(Init::Const(0.0));

#[derive(Debug, Clone)]
pub(crate) struct VisionTransformer {
    config: VitConfig,
    patch_embed: PatchEmbed,
    cls_token: ParamId,
    pos_embed: ParamId,
    pos_drop: Dropout,
    blocks: Vec<Block>,
    norm: LayerNorm,
    head: Linear,
}

#[derive(Debug, Clone)]
struct PatchEmbed {
    name: String,
    proj: Conv2d,
}

#[derive(Debug, Clone)]
struct Block {
    name: String,
    norm1: LayerNorm,
    attn: Attention,
    norm2: LayerNorm,
    mlp: Mlp,
}

#[derive(Debug, Clone)]
struct Attention {
    name: String,
    heads: usize,
    qkv: Linear,
    proj: Linear,
    proj_drop: Dropout,
}

#[derive(Debug, Clone)]
struct Mlp {
    name: String,
    fc1: Linear,
    act: Activation,
    drop1: Dropout,
    fc2: Linear,
    drop2: Dropout,
}

impl VisionTransformer {
    pub fn new(b: &mut Builder, c: &VitConfig) -> Result<Self> {
        let d = c.embed_dim;
        let patch_embed = {
            let mut b = b.sub("patch_embed");
            // PyTorch's default Conv2d initialisation: uniform in ±1/√fan_in (timm keeps it).
            let fan_in = (c.in_chans * c.patch_size * c.patch_size) as f32;
            let bound = Init::Uniform(1.0 / fan_in.sqrt());
            let shape = ConvShape { inputs: c.in_chans, outputs: d, kernel: c.patch_size, stride: c.patch_size, padding: 0 };
            let proj = Conv2d::new(&mut b.sub("proj"), shape, bound, Some(bound))?;
            PatchEmbed { name: b.layer(), proj }
        };
        let cls_token = b.tensor("cls_token", &[1, 1, d], Init::Normal(1e-6), Kind::NoDecay)?;
        let pos_embed = b.tensor("pos_embed", &[1, c.tokens(), d], Init::TruncNormal(0.02), Kind::NoDecay)?;
        let pos_drop = Dropout::new(b, c.drop_rate);
        let blocks = (0..c.depth).map(|i| Block::new(&mut b.sub("blocks").sub(i), c)).collect::<Result<Vec<_>>>()?;
        let norm = LayerNorm::new(&mut b.sub("norm"), d, c.layer_norm_eps)?;
        let head = Linear::new(&mut b.sub("head"), d, c.num_classes, LINEAR_INIT, ZERO)?;
        Ok(Self { config: c.clone(), patch_embed, cls_token, pos_embed, pos_drop, blocks, norm, head })
    }

    pub fn forward(&self, p: &Params, x: &Tensor, ctx: &mut Forward) -> Result<Tensor> {
        let c = &self.config;
        let expected = [c.in_chans, c.img_size, c.img_size];
        if x.rank() != 4 || x.shape()[1..] != expected {
            return Err(Error::Config {
                what: "ViT input",
                detail: format!("expected [N, {}, {}, {}], got {:?}", expected[0], expected[1], expected[2], x.shape()),
            });
        }
        let n = x.shape()[0];
        // [N, D, h, w] → [N, h·w, D]
        let patches = self.patch_embed.proj.forward(p, x, ctx)?;
        let tokens = patches.reshape(&[n, c.embed_dim, c.tokens() - 1])?.transpose(1, 2)?;
        ctx.record(&self.patch_embed.name, &tokens);
        // The class token meets no traced activation before the concat, so it joins the input's tape
        // here; otherwise the concat records nothing and the token never receives a gradient.
        let cls = p.at(self.cls_token).with_tape_of(&tokens);
        let cls_rows: Vec<&Tensor> = std::iter::repeat_n(&cls, n).collect();
        let mut h = Tensor::cat(&[&Tensor::cat(&cls_rows, 0)?, &tokens], 1)?.add(p.at(self.pos_embed))?;
        h = self.pos_drop.forward(h, ctx)?;
        for block in &self.blocks {
            h = block.forward(p, &h, ctx)?;
        }
        let h = self.norm.forward(p, &h, ctx)?;
        let pooled = h.narrow(1, 0, 1)?.reshape(&[n, c.embed_dim])?;
        self.head.forward(p, &pooled, ctx)
    }
}

impl Block {
    fn new(b: &mut Builder, c: &VitConfig) -> Result<Self> {
        let d = c.embed_dim;
        let norm1 = LayerNorm::new(&mut b.sub("norm1"), d, c.layer_norm_eps)?;
        let attn = {
            let mut b = b.sub("attn");
            let qkv_bias = c.qkv_bias.then_some(Init::Const(0.0));
            let qkv = Linear::new(&mut b.sub("qkv"), d, 3 * d, LINEAR_INIT, qkv_bias)?;
            let proj = Linear::new(&mut b.sub("proj"), d, d, LINEAR_INIT, ZERO)?;
            let proj_drop = Dropout::new(&mut b, c.drop_rate);
            Attention { name: b.layer(), heads: c.num_heads, qkv, proj, proj_drop }
        };
        let norm2 = LayerNorm::new(&mut b.sub("norm2"), d, c.layer_norm_eps)?;
        let mlp = {
            let mut b = b.sub("mlp");
            let hidden = c.mlp_hidden();
            let fc1 = Linear::new(&mut b.sub("fc1"), d, hidden, LINEAR_INIT, ZERO)?;
            let act = Activation::new(&mut b.sub("act"), Conventional::Gelu, LwtaLayout::Tokens, c.competition);
            let drop1 = Dropout::new(&mut b, c.drop_rate);
            let fc2 = Linear::new(&mut b.sub("fc2"), hidden, d, LINEAR_INIT, ZERO)?;
            let drop2 = Dropout::new(&mut b, c.drop_rate);
            Mlp { name: b.layer(), fc1, act, drop1, fc2, drop2 }
        };
        Ok(Self { name: b.layer(), norm1, attn, norm2, mlp })
    }

    fn forward(&self, p: &Params, x: &Tensor, ctx: &mut Forward) -> Result<Tensor> {
        let a = self.attn.forward(p, &self.norm1.forward(p, x, ctx)?, ctx)?;
        let x = x.add(&a)?;
        let m = self.mlp.forward(p, &self.norm2.forward(p, &x, ctx)?, ctx)?;
        let y = x.add(&m)?;
        ctx.record(&self.name, &y);
        Ok(y)
    }
}

impl Attention {
    fn forward(&self, p: &Params, x: &Tensor, ctx: &mut Forward) -> Result<Tensor> {
        let mixed = self.qkv.forward(p, x, ctx)?.packed_attention(self.heads, false)?;
        let y = self.proj_drop.forward(self.proj.forward(p, &mixed, ctx)?, ctx)?;
        ctx.record(&self.name, &y);
        Ok(y)
    }
}

impl Mlp {
    fn forward(&self, p: &Params, x: &Tensor, ctx: &mut Forward) -> Result<Tensor> {
        let h = self.act.forward(&self.fc1.forward(p, x, ctx)?, ctx)?;
        let h = self.drop1.forward(h, ctx)?;
        let y = self.drop2.forward(self.fc2.forward(p, &h, ctx)?, ctx)?;
        ctx.record(&self.name, &y);
        Ok(y)
    }
}
