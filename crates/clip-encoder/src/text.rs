//! `CLIPTextTransformer`: token and position embeddings, causal encoder, `final_layer_norm`,
//! pooled at the end-of-text token.

use cvn_autograd::Tensor;

use crate::config::{TextConfig, TextPooling};
use crate::error::{ClipError, Result};
use crate::layers::{Encoder, LayerNorm};
use crate::weights::WeightSource;
use crate::TowerOutput;

/// `CLIPTextEmbeddings`.
#[derive(Debug, Clone)]
pub struct TextEmbeddings {
    /// `[vocab, D]`.
    pub token_embedding: Tensor,
    /// `[context length, D]`.
    pub position_embedding: Tensor,
}

impl TextEmbeddings {
    fn load(w: &mut impl WeightSource, name: &str, c: &TextConfig) -> Self {
        let d = c.encoder.hidden_size;
        Self {
            token_embedding: w.tensor(&format!("{name}.token_embedding.weight"), &[c.vocab_size, d]),
            position_embedding: w.tensor(&format!("{name}.position_embedding.weight"), &[c.max_position_embeddings, d]),
        }
    }
}

/// `CLIPTextTransformer` (`text_model.*`).
#[derive(Debug, Clone)]
pub struct TextTransformer {
    pub embeddings: TextEmbeddings,
    pub encoder: Encoder,
    pub final_layer_norm: LayerNorm,
    pub pooling: TextPooling,
}

impl TextTransformer {
    pub fn load(w: &mut impl WeightSource, name: &str, c: &TextConfig) -> Self {
        Self {
            embeddings: TextEmbeddings::load(w, &format!("{name}.embeddings"), c),
            encoder: Encoder::load(w, &format!("{name}.encoder"), &c.encoder),
            final_layer_norm: LayerNorm::load(w, &format!("{name}.final_layer_norm"), c.encoder.hidden_size, c.encoder.layer_norm_eps),
            pooling: c.pooling,
        }
    }

    /// The longest sequence the position table allows (77).
    pub fn context_length(&self) -> usize {
        self.embeddings.position_embedding.shape()[0]
    }

    /// The position each sequence is pooled at: the first end-of-text token, or for legacy configs
    /// the first largest id (what `transformers` does).
    pub fn pool_position(&self, ids: &[u32]) -> Result<usize> {
        match self.pooling {
            TextPooling::FirstEos(eos) => ids
                .iter()
                .position(|&id| id == eos)
                .ok_or_else(|| ClipError::input("input_ids", format!("a sequence has no end-of-text token {eos}: {ids:?}"))),
            TextPooling::ArgmaxId => {
                let max = ids.iter().copied().max().unwrap_or(0);
                Ok(ids.iter().position(|&id| id == max).unwrap_or(0))
            }
        }
    }

    /// `ids`: equally long rows of at most [`Self::context_length`] token ids. `last_hidden` is
    /// after `final_layer_norm` `[B, T, D]`; `pooled` `[B, D]` is read at [`Self::pool_position`].
    ///
    /// The causal mask makes every position depend only on earlier ones, so rows cut right after
    /// their pooled token give the same pooled output as full-length rows (see `ClipModel::encode_token_ids`).
    pub fn forward(&self, ids: &[Vec<u32>]) -> Result<TowerOutput> {
        let (b, t) = (ids.len(), ids.first().map_or(0, Vec::len));
        let vocab = self.embeddings.token_embedding.shape()[0];
        if b == 0 || t == 0 || t > self.context_length() || ids.iter().any(|row| row.len() != t) {
            return Err(ClipError::input(
                "input_ids",
                format!("needs a non-empty batch of equally long rows of at most {} ids", self.context_length()),
            ));
        }
        if let Some(bad) = ids.iter().flatten().find(|&&id| id as usize >= vocab) {
            return Err(ClipError::input("input_ids", format!("id {bad} is outside the vocabulary of {vocab}")));
        }
        let pooled_rows = ids.iter().enumerate().map(|(i, row)| Ok(i * t + self.pool_position(row)?)).collect::<Result<Vec<usize>>>()?;
        let flat: Vec<usize> = ids.iter().flatten().map(|&id| id as usize).collect();
        let d = self.embeddings.token_embedding.shape()[1];
        let tokens = self.embeddings.token_embedding.index_select(&flat)?.reshape(&[b, t, d])?;
        let x = tokens.add(&self.embeddings.position_embedding.narrow(0, 0, t)?)?;
        let last_hidden = self.final_layer_norm.forward(&self.encoder.forward(&x, true)?)?;
        let pooled = last_hidden.reshape(&[b * t, d])?.index_select(&pooled_rows)?;
        Ok(TowerOutput { last_hidden, pooled })
    }
}
