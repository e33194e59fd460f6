//! The process's global allocator: mimalloc, called so that ordinary allocations take its plain
//! fast path.
//!
//! Written here rather than taken from the `mimalloc` crate because that crate's `GlobalAlloc`
//! hands every allocation to `mi_malloc_aligned`, even when the alignment is one any block
//! already has. In mimalloc v3 that call falls back to an over-allocating path whenever the size
//! class's page has no free block ready and the size is not a power of two: it then allocates
//! `size + align - 1` from the next size class up, and the first class's free list is never
//! refilled, so that size keeps taking the slow path. callgrind counted 6.6 such allocations per
//! request in scenario 3 of the benchmark (~1,600 instructions). The upstream change
//! (purpleprotocol/mimalloc_rust#170) is still open; this is the same dispatch.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// mimalloc's own guarantee (`MI_MAX_ALIGN_SIZE`, `sizeof(max_align_t)`): every block of 16
/// bytes or more starts on a 16-byte boundary, and every block on an 8-byte one (size classes
/// are whole words, pages start 16-aligned). The same rule std's `System` allocator applies to
/// `malloc`.
const PLAIN_ALIGN: usize = 16;

/// True when `mi_malloc(size)` already returns memory aligned to `align`.
fn plain_is_aligned(size: usize, align: usize) -> bool {
    align <= PLAIN_ALIGN && align <= size
}

/// mimalloc as the global allocator: plain calls where the alignment comes for free, the aligned
/// calls otherwise.
pub struct MiMalloc;

// SAFETY: every method forwards to mimalloc, which returns null on failure, memory aligned as
// asked (`plain_is_aligned` keeps the plain calls to the alignments mimalloc guarantees) and
// frees any pointer it returned with `mi_free`, whichever call allocated it.
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: mimalloc's allocation calls take any size and a power-of-two alignment, which
        // `Layout` guarantees.
        unsafe {
            if plain_is_aligned(layout.size(), layout.align()) {
                mi::mi_malloc(layout.size()).cast()
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        unsafe {
            if plain_is_aligned(layout.size(), layout.align()) {
                mi::mi_zalloc(layout.size()).cast()
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: the caller passes a pointer this allocator returned; `mi_free` frees blocks
        // from the plain and the aligned calls alike.
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller passes a pointer this allocator returned with `layout`; mimalloc
        // keeps the contents up to the smaller size and aligns the new block as asked.
        unsafe {
            if plain_is_aligned(new_size, layout.align()) {
                mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every layout an allocation can have here, small and large, plainly and over-aligned.
    fn layouts() -> Vec<Layout> {
        let mut all = Vec::new();
        for align in [1, 2, 4, 8, 16, 32, 64, 128, 4096] {
            for size in [1, 7, 8, 15, 16, 24, 48, 100, 1000, 1025, 4000, 70_000] {
                all.push(Layout::from_size_align(size, align).expect("valid layout"));
            }
        }
        all
    }

    #[test]
    fn every_block_is_aligned_as_asked_and_keeps_its_contents_through_realloc() {
        let allocator = MiMalloc;
        for layout in layouts() {
            for new_size in [layout.size() * 3, layout.size().div_ceil(2)] {
                // SAFETY: non-zero sizes; every pointer is checked for null, written and read
                // only within its layout, and freed once with its current layout.
                unsafe {
                    let p = allocator.alloc(layout);
                    assert!(!p.is_null(), "{layout:?}");
                    assert_eq!(p as usize % layout.align(), 0, "{layout:?}");
                    for i in 0..layout.size() {
                        p.add(i).write(i as u8);
                    }
                    let q = allocator.realloc(p, layout, new_size);
                    assert!(!q.is_null(), "{layout:?} -> {new_size}");
                    assert_eq!(q as usize % layout.align(), 0, "{layout:?} -> {new_size}");
                    for i in 0..layout.size().min(new_size) {
                        assert_eq!(
                            q.add(i).read(),
                            i as u8,
                            "{layout:?} -> {new_size}, byte {i}"
                        );
                    }
                    let resized = Layout::from_size_align(new_size, layout.align()).expect("valid");
                    allocator.dealloc(q, resized);
                }
            }
        }
    }

    #[test]
    fn zeroed_blocks_are_zero_and_aligned() {
        let allocator = MiMalloc;
        for layout in layouts() {
            // SAFETY: as above; the block is read only within its layout.
            unsafe {
                let p = allocator.alloc_zeroed(layout);
                assert!(!p.is_null(), "{layout:?}");
                assert_eq!(p as usize % layout.align(), 0, "{layout:?}");
                assert!(
                    (0..layout.size()).all(|i| p.add(i).read() == 0),
                    "{layout:?}"
                );
                allocator.dealloc(p, layout);
            }
        }
    }

    /// The reason for this module: a size class whose page runs out of free blocks must be
    /// refilled, not served from the next class up. 48 bytes is not a power of two, so the
    /// `mimalloc` crate's aligned call gave blocks of 56 bytes or more once the first page of
    /// 48-byte blocks was used up.
    #[test]
    fn blocks_come_from_their_own_size_class_after_pages_run_out() {
        let allocator = MiMalloc;
        let layout = Layout::from_size_align(48, 8).expect("valid layout");
        let mut blocks = Vec::with_capacity(20_000);
        // SAFETY: as above; every block is freed once with its layout.
        unsafe {
            for _ in 0..20_000 {
                let p = allocator.alloc(layout);
                assert!(!p.is_null());
                blocks.push(p);
            }
            let sizes: Vec<usize> = blocks
                .iter()
                .map(|p| mi::mi_usable_size(p.cast::<c_void>().cast_const()))
                .collect();
            for p in blocks {
                allocator.dealloc(p, layout);
            }
            assert!(
                sizes.iter().all(|&size| size == 48),
                "usable sizes seen: {:?}",
                {
                    let mut seen = sizes.clone();
                    seen.sort_unstable();
                    seen.dedup();
                    seen
                }
            );
        }
    }
}
