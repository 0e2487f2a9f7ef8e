//! clip-encoder (being written)
