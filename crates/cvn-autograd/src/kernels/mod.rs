//! CPU kernels on plain slices, shared by the tape's ops and the benches.

pub mod activation;
