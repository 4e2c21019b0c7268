//! [`HugePages`]: a global allocator that asks the kernel for transparent huge pages on large
//! allocations.
//!
//! A 4096-wide layer moves about a dozen 64 MiB matrices through memory, and the Gram stage
//! streams half a gigabyte of tokens through GEMM packing buffers. With 4 KiB pages that is
//! ~570k page faults and a TLB miss every few cache lines in the GEMM kernels; measured on the
//! 2-core CI machine (d = 4096, N = 16384, Qronos W4) the whole layer took 12.9 s with 4 KiB
//! pages and 10.2 s with huge pages (page faults 573k → 29k). Most Linux distributions ship
//! transparent huge pages in `madvise` mode, so a process has to ask: this allocator forwards
//! every request to [`System`] and then calls `madvise(MADV_HUGEPAGE)` on the 2 MiB-aligned
//! interior of each allocation of [`THRESHOLD`] bytes or more. On other systems, or where huge
//! pages are disabled, it is exactly [`System`].
//!
//! The `qronos` binary installs it; a program embedding the library can do the same:
//!
//! ```
//! #[global_allocator]
//! static ALLOC: qronos::alloc::HugePages = qronos::alloc::HugePages;
//! # fn main() {}
//! ```

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations at least this large are advised to use huge pages.
pub const THRESHOLD: usize = 4 << 20;

/// See the [module docs](self).
pub struct HugePages;

// SAFETY: every call is forwarded to `System` unchanged; `advise` only changes how the kernel
// backs pages of memory the allocation owns, never its contents or its bounds.
unsafe impl GlobalAlloc for HugePages {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        advise(p, layout.size());
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        advise(p, layout.size());
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if new_size > layout.size() {
            advise(p, new_size);
        }
        p
    }
}

/// Keep freed memory in the heap for reuse (glibc only; elsewhere nothing). A model forward
/// allocates and frees activation-sized buffers (tens of MiB) at every linear; handed back to
/// the kernel, each new one costs a round of page faults and page zeroing (7–12 % of an
/// eval's time). Sets `M_MMAP_THRESHOLD` to 32 MiB (glibc's maximum) and `M_TRIM_THRESHOLD`
/// to 1 GiB. Call it at the start of `main`, before other threads exist; the binary and the
/// benches do.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes glibc's allocation thresholds; callers run it before any
    // other thread allocates.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

#[cfg(target_os = "linux")]
fn advise(p: *mut u8, size: usize) {
    const HUGE: usize = 2 << 20;
    if p.is_null() || size < THRESHOLD {
        return;
    }
    let start = (p as usize).next_multiple_of(HUGE);
    let end = (p as usize + size) / HUGE * HUGE;
    if end > start {
        // SAFETY: [start, end) lies inside the allocation just returned to us; MADV_HUGEPAGE
        // is advice (it never changes contents), and a failure (e.g. huge pages compiled out)
        // leaves the memory as it was, so the result is ignored.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn advise(_: *mut u8, _: usize) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_and_small_allocations_round_trip() {
        for size in [16, THRESHOLD - 1, THRESHOLD, 3 * THRESHOLD + 12345] {
            let layout = Layout::from_size_align(size, 64).unwrap();
            unsafe {
                let p = HugePages.alloc_zeroed(layout);
                assert!(!p.is_null());
                assert!(std::slice::from_raw_parts(p, size).iter().all(|&b| b == 0));
                p.write_bytes(7, size);
                let q = HugePages.realloc(p, layout, 2 * size);
                assert!(std::slice::from_raw_parts(q, size).iter().all(|&b| b == 7));
                HugePages.dealloc(q, Layout::from_size_align(2 * size, 64).unwrap());
            }
        }
    }
}
