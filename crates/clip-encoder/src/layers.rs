//! The building blocks both towers share, named and nested as in `transformers`' `modeling_clip`
//! (`encoder.layers.N.self_attn.q_proj`, `mlp.fc1`, `layer_norm1`, ...), so each parameter is
//! loaded by the Hugging Face name it has in `model.safetensors`.

use cvn_autograd::Tensor;

use crate::config::{Activation, EncoderConfig};
use crate::error::Result;
use crate::weights::WeightSource;

/// `nn.Linear` (`[out, in]` weight).
#[derive(Debug, Clone)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    pub fn load(w: &mut impl WeightSource, name: &str, in_features: usize, out_features: usize, bias: bool) -> Self {
        Self {
            weight: w.tensor(&format!("{name}.weight"), &[out_features, in_features]),
            bias: bias.then(|| w.tensor(&format!("{name}.bias"), &[out_features])),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.linear(&self.weight, self.bias.as_ref())?)
    }
}

/// `nn.LayerNorm` over the last dimension.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f32,
}

impl LayerNorm {
    pub fn load(w: &mut impl WeightSource, name: &str, size: usize, eps: f32) -> Self {
        Self { weight: w.tensor(&format!("{name}.weight"), &[size]), bias: w.tensor(&format!("{name}.bias"), &[size]), eps }
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.layer_norm(&self.weight, &self.bias, self.eps)?)
    }
}

/// `CLIPAttention`: separate q/k/v projections, scaled dot-product attention, output projection.
#[derive(Debug, Clone)]
pub struct Attention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub out_proj: Linear,
    pub num_heads: usize,
}

impl Attention {
    fn load(w: &mut impl WeightSource, name: &str, c: &EncoderConfig) -> Self {
        let d = c.hidden_size;
        Self {
            q_proj: Linear::load(w, &format!("{name}.q_proj"), d, d, true),
            k_proj: Linear::load(w, &format!("{name}.k_proj"), d, d, true),
            v_proj: Linear::load(w, &format!("{name}.v_proj"), d, d, true),
            out_proj: Linear::load(w, &format!("{name}.out_proj"), d, d, true),
            num_heads: c.num_heads,
        }
    }

    /// `x: [B, T, D]`; `causal` hides later positions (the text tower).
    fn forward(&self, x: &Tensor, causal: bool) -> Result<Tensor> {
        let (q, k, v) = (self.q_proj.forward(x)?, self.k_proj.forward(x)?, self.v_proj.forward(x)?);
        self.out_proj.forward(&Tensor::multi_head_attention(&q, &k, &v, self.num_heads, causal)?)
    }
}

/// `CLIPMLP`: `fc2(act(fc1(x)))`.
#[derive(Debug, Clone)]
pub struct Mlp {
    pub fc1: Linear,
    pub fc2: Linear,
    pub activation: Activation,
}

impl Mlp {
    fn load(w: &mut impl WeightSource, name: &str, c: &EncoderConfig) -> Self {
        Self {
            fc1: Linear::load(w, &format!("{name}.fc1"), c.hidden_size, c.intermediate_size, true),
            fc2: Linear::load(w, &format!("{name}.fc2"), c.intermediate_size, c.hidden_size, true),
            activation: c.activation,
        }
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.fc1.forward(x)?;
        let h = match self.activation {
            Activation::QuickGelu => h.quick_gelu()?,
            Activation::Gelu => h.gelu()?,
        };
        self.fc2.forward(&h)
    }
}

/// `CLIPEncoderLayer`: pre-norm attention and MLP, each with a residual connection.
#[derive(Debug, Clone)]
pub struct EncoderLayer {
    pub self_attn: Attention,
    pub layer_norm1: LayerNorm,
    pub mlp: Mlp,
    pub layer_norm2: LayerNorm,
}

impl EncoderLayer {
    fn load(w: &mut impl WeightSource, name: &str, c: &EncoderConfig) -> Self {
        Self {
            self_attn: Attention::load(w, &format!("{name}.self_attn"), c),
            layer_norm1: LayerNorm::load(w, &format!("{name}.layer_norm1"), c.hidden_size, c.layer_norm_eps),
            mlp: Mlp::load(w, &format!("{name}.mlp"), c),
            layer_norm2: LayerNorm::load(w, &format!("{name}.layer_norm2"), c.hidden_size, c.layer_norm_eps),
        }
    }

    fn forward(&self, x: &Tensor, causal: bool) -> Result<Tensor> {
        let x = x.add(&self.self_attn.forward(&self.layer_norm1.forward(x)?, causal)?)?;
        Ok(x.add(&self.mlp.forward(&self.layer_norm2.forward(&x)?)?)?)
    }
}

/// `CLIPEncoder`: the stack of layers.
#[derive(Debug, Clone)]
pub struct Encoder {
    pub layers: Vec<EncoderLayer>,
}

impl Encoder {
    pub fn load(w: &mut impl WeightSource, name: &str, c: &EncoderConfig) -> Self {
        Self { layers: (0..c.num_layers).map(|i| EncoderLayer::load(w, &format!("{name}.layers.{i}"), c)).collect() }
    }

    pub fn forward(&self, x: &Tensor, causal: bool) -> Result<Tensor> {
        self.layers.iter().try_fold(x.clone(), |x, layer| layer.forward(&x, causal))
    }
}
