//! Fast CPU kernels and the CPU backend.
