//! Shared by the kernel tests (`kernels_group_norm.rs`, `kernels_conv.rs`): burn's two
//! wgpu backends, deterministic data, comparisons, and the lock around the process-wide
//! `kernels::set_enabled` switch.
#![allow(dead_code)] // each test file uses a part

use std::sync::{Mutex, MutexGuard};

use burn::backend::wgpu::{CubeBackend, Wgpu, WgpuRuntime};
use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Tensor};
use half::f16;

/// burn's default wgpu backend (fusion: our kernels run as custom stream operations).
pub type Fused = Wgpu;
/// The plain cubecl backend (our kernels launch directly).
pub type Plain = CubeBackend<WgpuRuntime, f32, i32, u32>;

static KERNELS_SWITCH: Mutex<()> = Mutex::new(());

/// Held by every test: `kernels::set_enabled` is process-wide and some tests turn it off.
pub fn lock() -> MutexGuard<'static, ()> {
    KERNELS_SWITCH.lock().unwrap_or_else(|e| e.into_inner())
}

/// Deterministic values in [-1, 1) (an LCG: the same on every backend and run).
pub fn noise(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

pub fn values<B: Backend, const D: usize>(x: Tensor<B, D>) -> Vec<f32> {
    x.cast(FloatDType::F32).into_data().to_vec::<f32>().unwrap()
}

pub fn round_f16(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| f16::from_f32(x).to_f32()).collect()
}

/// The largest `|got - want| - tol(want)` and the difference there; prints the max.
pub fn max_excess(got: &[f32], want: &[f32], tol: impl Fn(f32) -> f32) -> (f32, f32) {
    assert_eq!(got.len(), want.len());
    let mut worst = (f32::NEG_INFINITY, 0.0);
    for (&g, &w) in got.iter().zip(want) {
        assert!(g.is_finite(), "non-finite output {g}");
        let d = (g - w).abs();
        if d - tol(w) > worst.0 {
            worst = (d - tol(w), d);
        }
    }
    let max = got
        .iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .fold(0f32, f32::max);
    eprintln!(
        "max abs diff {max:.2e} (at the value nearest its bound: {:.2e})",
        worst.1
    );
    worst
}

/// Whether the wgpu device has tensor-core instructions (cmma/mma in cubecl's features).
pub fn wgpu_has_tensor_cores() -> bool {
    use cubecl::Runtime;
    let client = WgpuRuntime::client(&Default::default());
    let matmul = &client.properties().features.matmul;
    !matmul.cmma.is_empty() || !matmul.mma.is_empty()
}
