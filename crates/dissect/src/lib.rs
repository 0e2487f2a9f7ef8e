//! dissect (being written)
