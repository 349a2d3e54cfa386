//! A pid-keyed table in memory that forked children do not inherit.
//!
//! After fork(2) every private page the parent shares with its child is
//! write-protected, so the parent's next write to it is a copy-on-write
//! fault: a page allocated, charged to the cgroup and copied. fork mode
//! records each new child right after forking it; with `HashMap`s those
//! writes cost four to five such faults per connection, most of the
//! supervisor's own time per connection. This table lives in an anonymous
//! mapping marked `MADV_DONTFORK` (madvise(2)): children get no copy of it,
//! so fork neither copies nor write-protects its pages and the parent
//! writes it at memory speed. Open addressing with linear probing and
//! backward-shift deletion; the load is kept at most one half.
//!
//! Invariant: only the process that created a table uses it. The mapping
//! does not exist in a forked child, so a child that touched it would get
//! SIGSEGV (or, worse, whatever it mapped at that address since); forkd's
//! children never return into the supervisor's code, they exec or `_exit`.

use std::fmt;
use std::io;
use std::mem::MaybeUninit;
use std::ptr::NonNull;

use nix::unistd::Pid;

/// One slot; pid 0 (no process has it) marks an empty one, which is what
/// a fresh anonymous mapping holds.
#[repr(C)]
struct Slot<V> {
    pid: Pid,
    value: MaybeUninit<V>,
}

/// A `Pid → V` map for the values the supervisor writes after each fork.
/// `V: Copy`, so nothing needs dropping.
pub struct PidTable<V: Copy> {
    slots: NonNull<Slot<V>>,
    /// A power of two, at least 2.
    capacity: usize,
    /// Kept in the mapping too, so that counting writes no shared page.
    len: NonNull<usize>,
}

/// Bytes before the first slot (the length), enough for any slot alignment
/// the table accepts.
const HEADER: usize = 16;
const PAGE: usize = 4096;

impl<V: Copy> PidTable<V> {
    /// An empty table of one page (it grows by doubling).
    pub fn new() -> PidTable<V> {
        let fit = (PAGE - HEADER) / std::mem::size_of::<Slot<V>>().max(1);
        let capacity = if fit < 2 { 2 } else { 1 << fit.ilog2() };
        PidTable::with_capacity(capacity).unwrap_or_else(|e| {
            panic!(
                "cannot map {} bytes for a pid table: {e}",
                Self::bytes(capacity)
            )
        })
    }

    fn bytes(capacity: usize) -> usize {
        (HEADER + capacity * std::mem::size_of::<Slot<V>>()).next_multiple_of(PAGE)
    }

    fn with_capacity(capacity: usize) -> io::Result<PidTable<V>> {
        const { assert!(std::mem::align_of::<Slot<V>>() <= HEADER) };
        debug_assert!(capacity.is_power_of_two() && capacity >= 2);
        let bytes = Self::bytes(capacity);
        // SAFETY: a fresh private anonymous mapping; nothing else refers to it.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the mapping just made, `bytes` long.
        if unsafe { libc::madvise(base, bytes, libc::MADV_DONTFORK) } < 0 {
            let e = io::Error::last_os_error();
            // SAFETY: as above; unused by anyone.
            unsafe { libc::munmap(base, bytes) };
            return Err(e);
        }
        // The mapping is zeroed: length 0 and every pid 0, i.e. empty. Its
        // base is page-aligned and HEADER a multiple of the slot alignment.
        let base = base.cast::<u8>();
        // SAFETY: mmap succeeded, so `base` is not null.
        let len = unsafe { NonNull::new_unchecked(base.cast()) };
        // SAFETY: HEADER bytes into the mapping, still inside it, not null.
        let slots = unsafe { NonNull::new_unchecked(base.add(HEADER).cast()) };
        Ok(PidTable {
            slots,
            capacity,
            len,
        })
    }

    pub fn len(&self) -> usize {
        // SAFETY: `len` points into this table's live mapping.
        unsafe { *self.len.as_ptr() }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn slot(&self, index: usize) -> &Slot<V> {
        assert!(index < self.capacity);
        // SAFETY: in bounds (asserted) of the mapping, which lives as long
        // as `self`.
        unsafe { &*self.slots.as_ptr().add(index) }
    }

    fn slot_mut(&mut self, index: usize) -> &mut Slot<V> {
        assert!(index < self.capacity);
        // SAFETY: as in `slot`, and `&mut self` makes the access unique.
        unsafe { &mut *self.slots.as_ptr().add(index) }
    }

    fn set_len(&mut self, len: usize) {
        // SAFETY: as in `len`, unique through `&mut self`.
        unsafe { *self.len.as_ptr() = len };
    }

    /// The slot a pid's probe starts at (Fibonacci hashing: pids are
    /// mostly consecutive, the multiplication spreads them).
    fn home(&self, pid: Pid) -> usize {
        let bits = self.capacity.trailing_zeros();
        ((pid.as_raw() as u32 as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - bits)) as usize
    }

    /// The index holding `pid`, or the empty slot where it would go.
    fn find(&self, pid: Pid) -> (usize, bool) {
        let mask = self.capacity - 1;
        let mut i = self.home(pid);
        loop {
            match self.slot(i).pid.as_raw() {
                0 => return (i, false),
                p if p == pid.as_raw() => return (i, true),
                _ => i = (i + 1) & mask,
            }
        }
    }

    /// Inserts or replaces; returns the value it replaced.
    pub fn insert(&mut self, pid: Pid, value: V) -> Option<V> {
        assert!(pid.as_raw() > 0, "pid table: pid {pid} is not a process");
        let (i, found) = self.find(pid);
        if found {
            let slot = self.slot_mut(i);
            // SAFETY: an occupied slot holds an initialised value.
            let old = unsafe { slot.value.assume_init() };
            slot.value = MaybeUninit::new(value);
            return Some(old);
        }
        if (self.len() + 1) * 2 > self.capacity {
            self.grow();
            return self.insert(pid, value);
        }
        *self.slot_mut(i) = Slot {
            pid,
            value: MaybeUninit::new(value),
        };
        self.set_len(self.len() + 1);
        None
    }

    fn grow(&mut self) {
        let capacity = self.capacity * 2;
        let mut bigger = PidTable::with_capacity(capacity).unwrap_or_else(|e| {
            panic!(
                "cannot map {} bytes for a pid table: {e}",
                Self::bytes(capacity)
            )
        });
        for (pid, value) in self.iter() {
            bigger.insert(*pid, *value);
        }
        std::mem::swap(self, &mut bigger);
    }

    pub fn get(&self, pid: Pid) -> Option<&V> {
        match self.find(pid) {
            // SAFETY: an occupied slot holds an initialised value.
            (i, true) => Some(unsafe { self.slot(i).value.assume_init_ref() }),
            _ => None,
        }
    }

    pub fn contains(&self, pid: Pid) -> bool {
        self.find(pid).1
    }

    /// Removes `pid`, shifting back the entries of its probe run so that
    /// no tombstone is needed.
    pub fn remove(&mut self, pid: Pid) -> Option<V> {
        let (hole, found) = self.find(pid);
        if !found {
            return None;
        }
        // SAFETY: an occupied slot holds an initialised value.
        let value = unsafe { self.slot(hole).value.assume_init() };
        let hole = crate::open_addressing::remove_at(self, hole);
        self.slot_mut(hole).pid = Pid::from_raw(0);
        self.set_len(self.len() - 1);
        Some(value)
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> Iter<'_, V> {
        Iter {
            table: self,
            next: 0,
        }
    }
}

impl<V: Copy> Default for PidTable<V> {
    fn default() -> PidTable<V> {
        PidTable::new()
    }
}

impl<V: Copy> Drop for PidTable<V> {
    fn drop(&mut self) {
        // SAFETY: the mapping `with_capacity` made (its base is `len`),
        // no longer referenced.
        unsafe { libc::munmap(self.len.as_ptr().cast(), Self::bytes(self.capacity)) };
    }
}

/// [`PidTable::iter`]: the occupied slots in index order.
pub struct Iter<'a, V: Copy> {
    table: &'a PidTable<V>,
    next: usize,
}

impl<'a, V: Copy> Iterator for Iter<'a, V> {
    type Item = (&'a Pid, &'a V);
    fn next(&mut self) -> Option<Self::Item> {
        while self.next < self.table.capacity {
            let slot = self.table.slot(self.next);
            self.next += 1;
            if slot.pid.as_raw() != 0 {
                // SAFETY: an occupied slot holds an initialised value.
                return Some((&slot.pid, unsafe { slot.value.assume_init_ref() }));
            }
        }
        None
    }
}

impl<'a, V: Copy> IntoIterator for &'a PidTable<V> {
    type Item = (&'a Pid, &'a V);
    type IntoIter = Iter<'a, V>;
    fn into_iter(self) -> Iter<'a, V> {
        self.iter()
    }
}

impl<V: Copy + fmt::Debug> fmt::Debug for PidTable<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<V: Copy> crate::open_addressing::Probed for PidTable<V> {
    fn capacity(&self) -> usize {
        self.capacity
    }

    fn home_of(&self, index: usize) -> Option<usize> {
        let pid = self.slot(index).pid;
        (pid.as_raw() != 0).then(|| self.home(pid))
    }

    fn shift(&mut self, from: usize, to: usize) {
        let moved = Slot {
            pid: self.slot(from).pid,
            value: self.slot(from).value,
        };
        *self.slot_mut(to) = moved;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn pid(n: i32) -> Pid {
        Pid::from_raw(n)
    }

    #[test]
    fn behaves_like_a_hash_map_through_growth_and_removals() {
        let mut table = PidTable::<u64>::new();
        let mut model = HashMap::new();
        // A deterministic mix: consecutive pids (as the kernel hands them
        // out), wrap-arounds, re-inserts and removals in between.
        let mut x: u32 = 12345;
        for step in 0..20_000u64 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let p = pid(1 + (x >> 8) as i32 % 3000);
            if x % 3 == 0 {
                assert_eq!(table.remove(p), model.remove(&p));
            } else {
                assert_eq!(table.insert(p, step), model.insert(p, step));
            }
            assert_eq!(table.len(), model.len());
        }
        for (p, v) in &model {
            assert_eq!(table.get(*p), Some(v));
        }
        let mut seen: Vec<_> = table.iter().map(|(p, v)| (*p, *v)).collect();
        let mut want: Vec<_> = model.iter().map(|(p, v)| (*p, *v)).collect();
        seen.sort_unstable_by_key(|(p, _)| p.as_raw());
        want.sort_unstable_by_key(|(p, _)| p.as_raw());
        assert_eq!(seen, want);
        assert!(!table.contains(pid(4000)));
    }

    #[test]
    fn a_forked_child_has_no_copy() {
        let mut table = PidTable::<u32>::new();
        table.insert(pid(7), 1);
        let addr = table.len.as_ptr() as usize;
        // SAFETY: the child only calls msync(2) and `_exit`, both
        // async-signal-safe, so the test harness's threads do not matter.
        match unsafe { nix::unistd::fork() }.expect("fork") {
            nix::unistd::ForkResult::Child => {
                // msync on an unmapped range fails with ENOMEM.
                // SAFETY: msync only inspects the range.
                let r = unsafe { libc::msync(addr as *mut libc::c_void, PAGE, libc::MS_ASYNC) };
                // SAFETY: ends the child without running anything of the parent's.
                unsafe { libc::_exit(if r < 0 { 0 } else { 1 }) };
            }
            nix::unistd::ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).expect("waitpid");
                assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0));
            }
        }
        assert_eq!(table.get(pid(7)), Some(&1));
    }
}
