//! The musl CLI's allocator: Doug Lea's malloc (the `dlmalloc` crate, a
//! Rust port) for small and medium blocks, plus a few freed large blocks
//! kept mapped for the next allocation of their size.
//!
//! `make static-cli` builds the CLI against musl (`CLI_LIBC=gnu` for
//! glibc): it starts in ~0.5 ms where glibc's start probes the CPU for
//! ~0.6 ms more in a VM. musl's own malloc (mallocng) gives memory back eagerly: a group
//! of slots is unmapped as soon as its last slot is freed, so the home,
//! which allocates and frees a ~64 KiB datagram buffer per packet and
//! short-lived vectors per request, mapped, page-faulted and unmapped
//! memory all the time (~280 mmap/munmap per `python3 -c pass`, each
//! unmap of a multi-threaded process a TLB shootdown across CPUs, costly
//! in a VM). dlmalloc, like glibc's malloc (its descendant), keeps freed
//! chunks in bins for reuse and gives back only a large free top (2 MiB).
//! mimalloc did that too but cost every `diatom exec` its own start
//! (arena reservation, per-thread heaps); dlmalloc starts with nothing.
//! Its one heap sits behind one lock: the home's few threads rarely meet
//! there.
//!
//! Blocks of [`BIG`] bytes and more are mapped directly, in sizes
//! rounded up to [`CLASS`], and up to [`KEPT_BYTES`] of freed ones wait for
//! the next request of the same rounded size (the home's file reads: a
//! fresh buffer of up to 16 MiB per `Read`, freed by the endpoint's thread
//! once sent); mapping them apart keeps such buffers from fragmenting the
//! heap, and a kept one needs no page faults again.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::{Mutex, MutexGuard, PoisonError};

use dlmalloc::Dlmalloc;

/// Allocations from this size on are mapped here.
pub const BIG: usize = 256 << 10;
/// Mapped sizes are multiples of this (a Read's buffer is its length plus
/// a small header: repeated Reads of one length share a size).
pub const CLASS: usize = 256 << 10;
/// Most bytes of freed blocks kept mapped.
pub const KEPT_BYTES: usize = 256 << 20;
/// Most freed blocks kept.
const KEPT_BLOCKS: usize = 32;
/// Mapped blocks are page-aligned: larger alignments go to the heap.
const PAGE: usize = 4096;

/// The allocator (`#[global_allocator]` of the static CLI).
#[derive(Debug, Default)]
pub struct CachingAlloc;

/// Freed blocks: (mapped size, address). A fixed array: the allocator must
/// not allocate.
struct Kept {
    blocks: [(usize, usize); KEPT_BLOCKS],
    len: usize,
    bytes: usize,
}

static KEPT: Mutex<Kept> = Mutex::new(Kept {
    blocks: [(0, 0); KEPT_BLOCKS],
    len: 0,
    bytes: 0,
});

fn kept() -> MutexGuard<'static, Kept> {
    KEPT.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The heap of every block that is not mapped apart. dlmalloc takes its
/// memory from the system in mappings of 64 KiB and more.
static HEAP: Mutex<Dlmalloc> = Mutex::new(Dlmalloc::new());

fn heap() -> MutexGuard<'static, Dlmalloc> {
    // dlmalloc does not panic while it holds the lock (its checks are
    // debug assertions), so a poisoned lock still guards a sound heap.
    HEAP.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The mapped size for `layout`, or `None` when the heap serves it.
fn mapped_size(layout: Layout) -> Option<usize> {
    if layout.size() < BIG || layout.align() > PAGE {
        return None;
    }
    layout.size().checked_next_multiple_of(CLASS)
}

impl Kept {
    fn take(&mut self, size: usize) -> Option<*mut u8> {
        let i = self.blocks[..self.len]
            .iter()
            .position(|&(s, _)| s == size)?;
        let (_, addr) = self.blocks[i];
        self.len -= 1;
        self.blocks[i] = self.blocks[self.len];
        self.bytes -= size;
        Some(addr as *mut u8)
    }

    fn keep(&mut self, size: usize, ptr: *mut u8) -> bool {
        if self.len == KEPT_BLOCKS || self.bytes + size > KEPT_BYTES {
            return false;
        }
        self.blocks[self.len] = (size, ptr as usize);
        self.len += 1;
        self.bytes += size;
        true
    }
}

/// A fresh anonymous mapping of `size` bytes (zeroed), or null.
fn map(size: usize) -> *mut u8 {
    // SAFETY: a new private anonymous mapping; no existing memory touched.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        p.cast()
    }
}

impl CachingAlloc {
    /// A mapped block of `size` bytes: a kept one (`fresh` false) or new.
    fn block(size: usize) -> (*mut u8, bool) {
        match kept().take(size) {
            Some(p) => (p, false),
            None => (map(size), true),
        }
    }
}

// SAFETY: blocks come from `mmap` (page-aligned, at least the rounded
// size) or from the heap, and each goes back the way it came:
// `mapped_size` decides by the layout alone, which the caller passes
// unchanged to `dealloc` and `realloc`.
unsafe impl GlobalAlloc for CachingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match mapped_size(layout) {
            Some(size) => Self::block(size).0,
            // SAFETY: the caller's contract, passed on (dlmalloc's
            // `malloc` honours any power-of-two alignment).
            None => unsafe { heap().malloc(layout.size(), layout.align()) },
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match mapped_size(layout) {
            Some(size) => {
                let (p, fresh) = Self::block(size);
                if !fresh && !p.is_null() {
                    // SAFETY: a kept block of `size` >= layout.size() bytes.
                    unsafe { p.write_bytes(0, layout.size()) };
                }
                p
            }
            // SAFETY: the caller's contract, passed on.
            None => unsafe { heap().calloc(layout.size(), layout.align()) },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        match mapped_size(layout) {
            Some(size) => {
                if !kept().keep(size, ptr) {
                    // SAFETY: `ptr` is a mapping of `size` bytes nobody uses.
                    unsafe { libc::munmap(ptr.cast(), size) };
                }
            }
            // SAFETY: the caller's contract, passed on: `ptr` came from
            // the heap with this layout.
            None => unsafe { heap().free(ptr, layout.size(), layout.align()) },
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return std::ptr::null_mut();
        };
        match (mapped_size(layout), mapped_size(new_layout)) {
            // SAFETY: both the heap's: the caller's contract, passed on.
            (None, None) => unsafe { heap().realloc(ptr, layout.size(), layout.align(), new_size) },
            // The block already has room.
            (Some(old), Some(new)) if old == new => ptr,
            _ => {
                // SAFETY: a valid layout; the old block is readable for
                // min(old, new) bytes and freed the way it came.
                unsafe {
                    let p = self.alloc(new_layout);
                    if !p.is_null() {
                        std::ptr::copy_nonoverlapping(ptr, p, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                    p
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize) -> Layout {
        Layout::from_size_align(size, 8).unwrap()
    }

    /// The heap and the kept blocks are process-wide: tests that check
    /// which block comes back take turns (the test harness runs tests on
    /// parallel threads).
    fn serial() -> MutexGuard<'static, ()> {
        static SERIAL: Mutex<()> = Mutex::new(());
        SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[test]
    fn small_and_overaligned_blocks_are_the_heaps() {
        assert_eq!(mapped_size(layout(BIG - 1)), None);
        assert_eq!(
            mapped_size(Layout::from_size_align(BIG, 2 * PAGE).unwrap()),
            None
        );
        assert_eq!(mapped_size(layout(BIG)), Some(CLASS));
        assert_eq!(mapped_size(layout(BIG + 1)), Some(BIG + CLASS));
    }

    #[test]
    fn a_freed_large_block_serves_the_next_of_its_size_zeroed_when_asked() {
        let _turn = serial();
        let a = CachingAlloc;
        // A size no other test uses: the kept blocks are process-wide.
        let l = layout(40 * CLASS + 17);
        unsafe {
            let p = a.alloc_zeroed(l);
            assert!(!p.is_null());
            assert_eq!(p as usize % PAGE, 0);
            assert!(std::slice::from_raw_parts(p, l.size())
                .iter()
                .all(|&b| b == 0));
            p.write_bytes(0xa5, l.size());
            a.dealloc(p, l);
            let q = a.alloc(l);
            assert_eq!(q, p, "the kept block is reused");
            a.dealloc(q, l);
            let z = a.alloc_zeroed(l);
            assert_eq!(z, p);
            assert!(std::slice::from_raw_parts(z, l.size())
                .iter()
                .all(|&b| b == 0));
            a.dealloc(z, l);
        }
    }

    #[test]
    fn realloc_keeps_the_contents_across_both_kinds() {
        let _turn = serial();
        let a = CachingAlloc;
        unsafe {
            let small = layout(1000);
            let p = a.alloc(small);
            for i in 0..1000 {
                *p.add(i) = i as u8;
            }
            let big = 3 * BIG + 5;
            let q = a.realloc(p, small, big);
            assert!(!q.is_null());
            let check = |p: *mut u8, n: usize| (0..n).all(|i| *p.add(i) == i as u8);
            assert!(check(q, 1000));
            // Growing within the rounded size keeps the block.
            let r = a.realloc(q, layout(big), big + 100);
            assert_eq!(r, q);
            let s = a.realloc(r, layout(big + 100), 500);
            assert!(check(s, 500));
            a.dealloc(s, layout(500));
        }
    }

    #[test]
    fn heap_blocks_are_aligned_zeroed_when_asked_and_shared_by_threads() {
        let _turn = serial();
        let a = CachingAlloc;
        let threads: Vec<_> = (0..4u8)
            .map(|t| {
                std::thread::spawn(move || {
                    let a = CachingAlloc;
                    for round in 0..200usize {
                        let size = 1 + (round * 997 + usize::from(t) * 131) % (BIG - 1);
                        let align = 1usize << (round % 14);
                        let l = Layout::from_size_align(size, align).unwrap();
                        unsafe {
                            let p = if round % 2 == 0 {
                                a.alloc(l)
                            } else {
                                a.alloc_zeroed(l)
                            };
                            assert!(!p.is_null());
                            assert_eq!(p as usize % align, 0);
                            let s = std::slice::from_raw_parts_mut(p, size);
                            if round % 2 == 1 {
                                assert!(s.iter().all(|&b| b == 0), "zeroed");
                            }
                            s.fill(t);
                            let q = a.realloc(p, l, size * 2);
                            assert!(!q.is_null());
                            let s = std::slice::from_raw_parts(q, size);
                            assert!(s.iter().all(|&b| b == t), "kept by realloc");
                            a.dealloc(q, Layout::from_size_align(size * 2, align).unwrap());
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // Freed small blocks are reused rather than given back: a thousand
        // rounds of one size take a handful of places (dlmalloc may serve
        // the next block from the remainder it split last, not the block
        // just freed, so not always the same one).
        let l = layout(3000);
        let mut places = std::collections::HashSet::new();
        for _ in 0..1000 {
            unsafe {
                let p = a.alloc(l);
                places.insert(p as usize);
                a.dealloc(p, l);
            }
        }
        assert!(places.len() <= 4, "{} places", places.len());
    }

    #[test]
    fn no_more_than_the_limit_is_kept() {
        let mut k = Kept {
            blocks: [(0, 0); KEPT_BLOCKS],
            len: 0,
            bytes: 0,
        };
        assert!(k.keep(KEPT_BYTES - CLASS, 0x1000 as *mut u8));
        assert!(!k.keep(2 * CLASS, 0x2000 as *mut u8));
        assert!(k.keep(CLASS, 0x3000 as *mut u8));
        assert_eq!(k.take(CLASS), Some(0x3000 as *mut u8));
        assert_eq!(k.take(CLASS), None);
        for i in 0..KEPT_BLOCKS {
            k.keep(0, (i * PAGE) as *mut u8);
        }
        assert_eq!(k.len, KEPT_BLOCKS);
        assert!(!k.keep(0, std::ptr::null_mut()));
    }
}
