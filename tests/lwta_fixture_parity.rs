//! Filled by the LWTA reference work: parity of the CPU reference against `tests/fixtures/lwta`.
