//! Deletion in a linear-probing hash table without tombstones, shared by
//! the supervisor's tables that live outside the Rust heap (the pid table
//! of fork-mode connections, the shared `per_ip` table).
//!
//! Pure index arithmetic over a [`Probed`] table: no memory of its own, no
//! syscalls.

/// A linear-probing table of a power-of-two number of slots.
pub trait Probed {
    fn capacity(&self) -> usize;
    /// The home slot of the entry at `index`, or None if it is empty.
    fn home_of(&self, index: usize) -> Option<usize>;
    /// Moves the entry at `from` into the (vacated) slot `to`.
    fn shift(&mut self, from: usize, to: usize);
}

/// Empties slot `hole`: later entries of its run move back so that every
/// entry stays reachable from its home slot (Knuth's Algorithm R). Returns
/// the slot left vacant, which the caller marks empty.
pub fn remove_at(table: &mut impl Probed, mut hole: usize) -> usize {
    let mask = table.capacity() - 1;
    let mut next = hole;
    loop {
        next = (next + 1) & mask;
        if next == hole {
            break;
        }
        let Some(home) = table.home_of(next) else {
            break;
        };
        // The entry stays unless its home lies cyclically in (hole, next].
        let stays = if hole <= next {
            hole < home && home <= next
        } else {
            hole < home || home <= next
        };
        if !stays {
            table.shift(next, hole);
            hole = next;
        }
    }
    hole
}
