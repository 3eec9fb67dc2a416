//! A global allocator that backs large buffers with transparent huge pages (Linux).
//!
//! Model weights and activations are large, freshly allocated buffers; on Linux each 4 KiB page of
//! a fresh buffer costs a page fault on first touch, and on virtual machines those are slow (about
//! 1 ms per MiB measured on this project's CI machine, more than copying the data). With
//! [`HugePageAlloc`], allocations of 2 MiB and more are aligned to 2 MiB and marked
//! `MADV_HUGEPAGE`, so the kernel maps them 2 MiB at a time: 512 times fewer faults. Everything else
//! goes to the system allocator unchanged; on other systems it is the system allocator.
//!
//! The `resnet-zoo` binary installs it; a program using the library can too:
//!
//! ```no_run
//! #[global_allocator]
//! static ALLOC: resnet_zoo::alloc::HugePageAlloc = resnet_zoo::alloc::HugePageAlloc;
//! # fn main() {}
//! ```
//!
//! Zeroed allocations (`vec![0.0; n]`, `Tensor::zeros`) are advised *before* they are zeroed: the
//! system allocator zero-fills a block this strongly aligned itself, which would fault every page
//! in at 4 KiB before the advice arrives.
//!
//! It only advises the kernel: with transparent huge pages set to `never` nothing changes, and the
//! cost is at most 2 MiB of alignment padding per large allocation.

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations at least this large are huge-page aligned and advised.
const HUGE: usize = 2 << 20;

/// See the [module documentation](self).
#[derive(Debug, Default, Clone, Copy)]
pub struct HugePageAlloc;

impl HugePageAlloc {
    /// The layout a large allocation really uses (2 MiB aligned), or `None` to use `layout` as is.
    fn huge(layout: Layout) -> Option<Layout> {
        if cfg!(target_os = "linux") && layout.size() >= HUGE {
            Layout::from_size_align(layout.size(), layout.align().max(HUGE)).ok()
        } else {
            None
        }
    }

    #[cfg(target_os = "linux")]
    fn advise(ptr: *mut u8, size: usize) {
        if !ptr.is_null() {
            // SAFETY: `ptr..ptr + size` is the allocation just made; madvise only sets a hint on
            // those pages and cannot invalidate them. Its result is ignored (a hint).
            unsafe {
                libc::madvise(ptr.cast(), size, libc::MADV_HUGEPAGE);
            }
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn advise(_ptr: *mut u8, _size: usize) {}
}

// SAFETY: every call forwards to `System` with either the caller's layout or a layout of the same
// size and a larger alignment; `dealloc` and `realloc` recompute the same layout from the caller's.
unsafe impl GlobalAlloc for HugePageAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match Self::huge(layout) {
            Some(huge) => {
                // SAFETY: `huge` has a non-zero size (>= 2 MiB).
                let ptr = unsafe { System.alloc(huge) };
                Self::advise(ptr, huge.size());
                ptr
            }
            // SAFETY: the caller's layout, under the caller's contract.
            None => unsafe { System.alloc(layout) },
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match Self::huge(layout) {
            Some(huge) => {
                // Not `System.alloc_zeroed`: for an alignment this large it allocates and then
                // zero-fills, so every page would be faulted in 4 KiB at a time before the advice.
                // Advise first, then zero: the writes fault the pages in huge.
                // SAFETY: as in `alloc`.
                let ptr = unsafe { System.alloc(huge) };
                if !ptr.is_null() {
                    Self::advise(ptr, huge.size());
                    // SAFETY: `ptr` is valid for `huge.size()` bytes, just allocated.
                    unsafe { ptr.write_bytes(0, huge.size()) };
                }
                ptr
            }
            // SAFETY: the caller's layout, under the caller's contract.
            None => unsafe { System.alloc_zeroed(layout) },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let layout = Self::huge(layout).unwrap_or(layout);
        // SAFETY: `ptr` was allocated by `alloc`/`alloc_zeroed`/`realloc` with this same layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = Self::huge(layout).unwrap_or(layout);
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return std::ptr::null_mut();
        };
        match (Self::huge(layout), Self::huge(new_layout)) {
            // Same alignment class on both sides: the system can resize in place.
            (None, None) | (Some(_), Some(_)) => {
                // SAFETY: `ptr` was allocated with `old`; the new size keeps its alignment class.
                let p = unsafe { System.realloc(ptr, old, new_size) };
                if new_size >= HUGE {
                    Self::advise(p, new_size);
                }
                p
            }
            // Crossing the threshold changes the alignment: allocate, copy, free.
            _ => {
                // SAFETY: `new_layout` has a non-zero size (realloc's contract).
                let new = unsafe { self.alloc(new_layout) };
                if !new.is_null() {
                    // SAFETY: both blocks are valid for the smaller of the two sizes and distinct.
                    unsafe {
                        std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                }
                new
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn large_allocations_are_huge_page_aligned_and_usable() {
        let small = Layout::from_size_align(1000, 8).unwrap();
        assert!(HugePageAlloc::huge(small).is_none());
        let big = Layout::from_size_align(3 << 20, 4).unwrap();
        if cfg!(target_os = "linux") {
            assert_eq!(HugePageAlloc::huge(big).map(|l| l.align()), Some(HUGE));
        }
        let a = HugePageAlloc;
        // SAFETY: a plain allocate / write / grow / shrink / free sequence with matching layouts.
        unsafe {
            let p = a.alloc(big);
            assert!(!p.is_null());
            if cfg!(target_os = "linux") {
                assert_eq!(p as usize % HUGE, 0);
            }
            p.write_bytes(7, big.size());
            // Grow within the huge class, then shrink below the threshold: the data stays.
            let p = a.realloc(p, big, 5 << 20);
            assert_eq!(*p.add((3 << 20) - 1), 7);
            let grown = Layout::from_size_align(5 << 20, 4).unwrap();
            let p = a.realloc(p, grown, 100);
            assert_eq!(*p.add(99), 7);
            a.dealloc(p, Layout::from_size_align(100, 4).unwrap());
            // Grow from small to huge.
            let p = a.alloc(small);
            p.write_bytes(3, small.size());
            let p = a.realloc(p, small, 4 << 20);
            assert_eq!(*p.add(999), 3);
            a.dealloc(p, Layout::from_size_align(4 << 20, 8).unwrap());
        }
    }

    #[test]
    fn large_zeroed_allocations_are_zero_even_on_reused_memory() {
        let a = HugePageAlloc;
        let big = Layout::from_size_align(3 << 20, 4).unwrap();
        // SAFETY: allocate / write / free, then a zeroed allocation of the same layout (which the
        // system may serve from the block just freed) read back whole.
        unsafe {
            let p = a.alloc(big);
            p.write_bytes(0xa5, big.size());
            a.dealloc(p, big);
            let z = a.alloc_zeroed(big);
            assert!(!z.is_null());
            if cfg!(target_os = "linux") {
                assert_eq!(z as usize % HUGE, 0);
            }
            let bytes = std::slice::from_raw_parts(z, big.size());
            assert!(bytes.iter().all(|&b| b == 0));
            a.dealloc(z, big);
        }
    }
}
