//! GPU backend (WGSL through wgpu). Being written.
