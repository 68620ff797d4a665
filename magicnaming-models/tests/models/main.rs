//! The CPU integration tests of magicnaming-models, one test binary (each `tests/*.rs`
//! file is a binary of its own that links burn: one binary links once). Run one group
//! with a filter, e.g. `cargo test --release -p magicnaming-models --test models schedulers::`.
//!
//! The wgpu kernel tests (`tests/kernels_*.rs`, `--features wgpu` and a Vulkan device)
//! stay separate binaries.

mod clip_model;
mod common;
mod diffusion_common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// The system allocator, with a per-thread cap that [`bounded`] sets: past it an
/// allocation fails, which aborts the process ("memory allocation of N bytes failed").
struct Capped;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static CAP: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// Counts `grow` more live bytes on this thread; false when that passes the cap.
fn take(grow: usize) -> bool {
    LIVE.try_with(|live| {
        let now = live.get().saturating_add(grow);
        if now > CAP.try_with(Cell::get).unwrap_or(usize::MAX) {
            return false;
        }
        live.set(now);
        true
    })
    .unwrap_or(true)
}

fn give(shrink: usize) {
    let _ = LIVE.try_with(|live| live.set(live.get().saturating_sub(shrink)));
}

// SAFETY: every call is forwarded to `System` with the same layout; the bookkeeping
// touches only const-initialised thread-locals (no allocation, no destructor).
unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !take(layout.size()) {
            return std::ptr::null_mut();
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !take(layout.size()) {
            return std::ptr::null_mut();
        }
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        give(layout.size());
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() && !take(new_size - layout.size()) {
            return std::ptr::null_mut();
        }
        let out = unsafe { System.realloc(ptr, layout, new_size) };
        if new_size < layout.size() {
            give(layout.size() - new_size);
        }
        out
    }
}

#[global_allocator]
static ALLOCATOR: Capped = Capped;

/// Runs `f` with this thread allowed at most `cap` more live bytes than it holds now.
pub fn bounded<T>(cap: usize, f: impl FnOnce() -> T) -> T {
    let before = LIVE.with(Cell::get);
    CAP.with(|c| c.set(before.saturating_add(cap)));
    let out = f();
    CAP.with(|c| c.set(usize::MAX));
    out
}

mod curate_rules;
mod dataset_build;
mod face;
mod face_crop;
mod fuzz;
mod lora;
mod lora_train;
mod norm;
mod pipeline;
mod precision;
mod schedulers;
mod text_stack;
mod tokenizer;
mod train;
mod unet;
mod vae;
mod vision;
