//! Turning our kernels on and off for the whole process.
use core::sync::atomic::{AtomicBool, Ordering};

static ENABLED: AtomicBool = AtomicBool::new(true);

/// Turns our kernels on (the default) or off for the whole process.
pub fn set_enabled(enabled: bool) {
    ENABLED.store(enabled, Ordering::Relaxed);
}

/// Whether our kernels are on ([`set_enabled`]).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Whether this build has paths of its own for any backend: CubeCL kernels (the `cuda`
/// or `wgpu` feature) or burn-flex paths (`flex`).
pub const COMPILED: bool = cfg!(any(feature = "kernels", feature = "flex"));
