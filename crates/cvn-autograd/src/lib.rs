//! cvn-autograd (being written)
