//! The ANE device layer: Device trait, simulator, private-API device (macOS), kernels, backend.
