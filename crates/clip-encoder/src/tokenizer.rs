//! CLIP's byte-level BPE through the `tokenizers` crate and the repository's `tokenizer.json`.
//!
//! Every sequence is `<|startoftext|> tokens <|endoftext|>` (added by the file's post-processor),
//! truncated so that both special tokens survive, and padded with id 0 to the context length —
//! exactly OpenAI's `clip.tokenize`. The pad id never matters for the embeddings: the causal mask
//! keeps padding out of every position up to the pooled end-of-text token.

use std::path::{Path, PathBuf};

use tokenizers::{PaddingDirection, PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use crate::error::{ClipError, Result};

/// Id written after the end-of-text token (OpenAI's `clip.tokenize` pads with zeros).
pub const PAD_ID: u32 = 0;

/// A `tokenizer.json` set up for fixed-length CLIP input.
pub struct ClipTokenizer {
    inner: Tokenizer,
    context_length: usize,
    file: PathBuf,
}

impl ClipTokenizer {
    /// Loads `tokenizer.json` and fixes the sequence length to `context_length` (the text config's
    /// `max_position_embeddings`).
    pub fn from_file(path: &Path, context_length: usize) -> Result<Self> {
        let err = |detail: String| ClipError::Tokenizer { file: path.display().to_string(), detail };
        if context_length < 2 {
            return Err(err(format!("context length {context_length} leaves no room for the start and end tokens")));
        }
        let mut inner = Tokenizer::from_file(path).map_err(|e| err(e.to_string()))?;
        inner
            .with_truncation(Some(TruncationParams { max_length: context_length, ..Default::default() }))
            .map_err(|e| err(format!("cannot truncate to {context_length} tokens: {e}")))?;
        let pad_token = inner.id_to_token(PAD_ID).unwrap_or_default();
        inner.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(context_length),
            direction: PaddingDirection::Right,
            pad_id: PAD_ID,
            pad_type_id: 0,
            pad_token,
            pad_to_multiple_of: None,
        }));
        Ok(Self { inner, context_length, file: path.to_path_buf() })
    }

    pub fn context_length(&self) -> usize {
        self.context_length
    }

    /// Ids of each text, each exactly `context_length` long (tokenised in parallel).
    pub fn encode_batch<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Result<Vec<Vec<u32>>> {
        let inputs: Vec<&str> = texts.iter().map(AsRef::as_ref).collect();
        let encodings = self
            .inner
            .encode_batch(inputs, true)
            .map_err(|e| ClipError::Tokenizer { file: self.file.display().to_string(), detail: format!("encoding failed: {e}") })?;
        Ok(encodings.into_iter().map(|e| e.get_ids().to_vec()).collect())
    }

    /// Ids of one text, `context_length` long.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.encode_batch(&[text])?.remove(0))
    }
}

/// The ids up to and including the first `end_id` (drops the padding) — for comparing against
/// unpadded references and for printing.
pub fn strip_padding(ids: &[u32], end_id: u32) -> &[u32] {
    match ids.iter().position(|&id| id == end_id) {
        Some(i) => &ids[..=i],
        None => ids,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/clip_tokenizer");

    fn tokenizer() -> ClipTokenizer {
        ClipTokenizer::from_file(&Path::new(FIXTURES).join("tokenizer.json"), 77).unwrap()
    }

    #[test]
    fn long_texts_keep_start_and_end_tokens() {
        let t = tokenizer();
        let text = "cat ".repeat(200);
        let ids = t.encode(&text).unwrap();
        assert_eq!(ids.len(), 77);
        assert_eq!(ids[0], 49406);
        assert_eq!(ids[76], 49407);
        assert!(ids[1..76].iter().all(|&id| id == ids[1] && id != 49407));
    }

    #[test]
    fn short_texts_are_zero_padded() {
        let t = tokenizer();
        let ids = t.encode("dog").unwrap();
        assert_eq!(ids.len(), 77);
        assert_eq!(strip_padding(&ids, 49407), &[49406, 1929, 49407]);
        assert!(ids[3..].iter().all(|&id| id == PAD_ID));
    }

    #[test]
    fn a_missing_file_is_named() {
        let err = ClipTokenizer::from_file(Path::new("/nonexistent/tokenizer.json"), 77).err().unwrap().to_string();
        assert!(err.contains("/nonexistent/tokenizer.json"), "{err}");
    }
}
