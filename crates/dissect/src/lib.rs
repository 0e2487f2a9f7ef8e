//! # dissect — CLIP-Dissect on competition-based networks
//!
//! record → score → similarity → label → evaluate → explain → report.

mod error;
mod simd;
pub mod similarity;

pub use error::{DissectError, Result};
pub use similarity::Similarity;
pub mod parity;

pub use parity::parity_checks;
