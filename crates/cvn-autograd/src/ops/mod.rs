//! Tensor ops, one file per family; each adds methods to [`crate::Tensor`].

pub(crate) mod activation;
mod attention;
pub(crate) mod binary;
mod conv;
mod layout;
mod loss;
pub(crate) mod matmul;
pub(crate) mod norm;
mod pool;
pub(crate) mod reduce;
mod softmax;
