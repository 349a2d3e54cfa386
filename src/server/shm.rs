//! Anonymous shared memory for the tables the supervisor shares with its
//! workers (the scoreboard, the per-IP counts): `mmap(MAP_SHARED |
//! MAP_ANONYMOUS)` made before any worker forks, so every worker sees the
//! same pages and no file or name exists to clean up.
//!
//! A table is a `#[repr(C)]` header followed by fixed-size records, all of
//! whose fields are atomics ([`Shared`]): the kernel's zero fill is a valid
//! value of each, and processes touch the memory only through them. All the
//! `unsafe` of those tables is here.

use std::ptr::NonNull;

/// A type that may live in a shared mapping.
///
/// # Safety
/// Every field is an atomic integer, so all-zero bytes and indeed every bit
/// pattern another process may write are valid values, and concurrent
/// access from several processes is sound.
pub unsafe trait Shared {}

/// The raw mapping; owns the pages and unmaps them on drop.
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    /// Maps room for a `H` followed by `count` `T`s, zero-filled.
    pub fn new<H: Shared, T: Shared>(count: usize) -> std::io::Result<Mapping> {
        use nix::sys::mman::{mmap_anonymous, MapFlags, ProtFlags};
        let len = std::mem::size_of::<H>() + count * std::mem::size_of::<T>();
        let size = std::num::NonZeroUsize::new(len).expect("a shared table is not empty");
        // SAFETY: a fresh anonymous mapping aliases no Rust object; the
        // kernel zero-fills it, and zero is a valid value of every `Shared`.
        let ptr = unsafe {
            mmap_anonymous(
                None,
                size,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED | MapFlags::MAP_NORESERVE,
            )?
        };
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }

    /// The header and the `count` records after it, bounds-checked against
    /// the mapping's length.
    pub fn parts<H: Shared, T: Shared>(&self, count: usize) -> (&H, &[T]) {
        let start = std::mem::size_of::<H>();
        assert!(start + count * std::mem::size_of::<T>() <= self.len);
        assert_eq!(start % std::mem::align_of::<T>(), 0);
        // SAFETY: the header and the record range lie inside our live,
        // page-aligned mapping (asserted above) and `start` is a multiple of
        // T's alignment. `H` and `T` are `Shared`: the zero fill is valid
        // and every process touches the memory only through atomics. The
        // references borrow `self`, so they cannot outlive the mapping.
        unsafe {
            let base = self.ptr.as_ptr();
            let header = &*base.cast::<H>();
            let records = std::slice::from_raw_parts(base.add(start).cast::<T>(), count);
            (header, records)
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned, and no
        // reference into the mapping outlives `self` (they borrow it).
        let _ = unsafe { nix::sys::mman::munmap(self.ptr.cast(), self.len) };
    }
}
