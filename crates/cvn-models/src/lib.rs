//! cvn-models (being written)
