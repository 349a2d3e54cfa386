//! The counting semaphores of the rings: a count and a futex on it
//! (futex(2), the algorithm of glibc's `sem_t`), living in the shared
//! region.
//!
//! forkd does not use POSIX `sem_t` here: glibc's `sem_post` takes its
//! futex flags from the `sem_t` itself, so a worker that scribbles on one
//! can make the supervisor's `sem_post` abort ("The futex facility
//! returned an unexpected error code") or issue a futex operation of the
//! worker's choosing. With these, the supervisor only does atomic
//! operations and a `FUTEX_WAKE` whose operation is a constant; a count no
//! honest peer produces is reported, never obeyed. Only the worker ever
//! waits, for a bounded time. The futexes are shared ones (no
//! `FUTEX_PRIVATE_FLAG`): the waiter may be another process.

use std::sync::atomic::{fence, AtomicU32, Ordering::*};
use std::time::Duration;

use super::region::SLOTS;

/// A count no honest peer produces (over [`SLOTS`]), or one that kept
/// changing under the compare-and-swap.
#[derive(Debug)]
pub(super) struct Garbled(pub u32);

/// A counting semaphore shared between two processes: a count and a
/// futex on it, plus how many threads sleep on that futex.
#[repr(C, align(64))]
pub(super) struct Semaphore {
    count: AtomicU32,
    waiters: AtomicU32,
}

impl Semaphore {
    pub fn init(&self, count: u32) {
        self.count.store(count, Relaxed);
        self.waiters.store(0, Relaxed);
    }

    /// Takes a token if there is one; never blocks.
    pub fn try_take(&self) -> Result<bool, Garbled> {
        let mut count = self.count.load(Acquire);
        // An honest peer changes the count at most SLOTS times between our
        // load and our exchange; a scribbler must not keep us spinning.
        for _ in 0..4 * SLOTS {
            if count == 0 {
                return Ok(false);
            }
            if count > SLOTS {
                return Err(Garbled(count));
            }
            match self
                .count
                .compare_exchange(count, count - 1, AcqRel, Acquire)
            {
                Ok(_) => return Ok(true),
                Err(now) => count = now,
            }
        }
        Err(Garbled(count))
    }

    /// Adds a token and wakes a thread waiting for one; never blocks.
    pub fn give(&self) -> Result<(), Garbled> {
        let before = self.count.fetch_add(1, SeqCst);
        // Pairs with the fence in `take_within`: either the waiter's
        // FUTEX_WAIT sees the new count, or this SeqCst load, which
        // follows that fence in the single total order if the wait missed
        // our add, sees the waiter. No fence of our own is needed (on x86
        // one would be a second full barrier after the locked add).
        if self.waiters.load(SeqCst) != 0 {
            futex_wake(&self.count, 1);
        }
        if before >= SLOTS {
            return Err(Garbled(before.wrapping_add(1)));
        }
        Ok(())
    }

    /// Takes a token, waiting up to `timeout` for one (the worker's side
    /// only). `Ok(false)` after the timeout or a wake-up that left no
    /// token: the caller checks why and waits again.
    pub fn take_within(&self, timeout: Duration) -> Result<bool, Garbled> {
        if self.try_take()? {
            return Ok(true);
        }
        self.waiters.fetch_add(1, SeqCst);
        fence(SeqCst);
        // Sleeps only while the count is still 0.
        futex_wait(&self.count, 0, timeout);
        self.waiters.fetch_sub(1, SeqCst);
        self.try_take()
    }

    /// Wakes every waiter for good: the supervisor is closing the channel
    /// (the token it adds is never taken, the worker checks `closed`
    /// first).
    pub fn wake_for_close(&self) {
        self.count.fetch_add(1, SeqCst);
        fence(SeqCst);
        futex_wake(&self.count, i32::MAX);
    }
}

fn futex_wake(word: &AtomicU32, waiters: i32) {
    // SAFETY: FUTEX_WAKE only uses the address as a key to find sleepers
    // (futex(2)); `word` is an aligned u32 in our mapping for the whole
    // call. The operation is a constant (shared, not FUTEX_PRIVATE_FLAG:
    // the sleeper may be another process) and its result changes nothing
    // for the caller.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, waiters);
    }
}

fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let timeout = libc::timespec {
        tv_sec: timeout.as_secs().try_into().unwrap_or(libc::time_t::MAX),
        tv_nsec: timeout.subsec_nanos().into(),
    };
    // SAFETY: `word` is an aligned u32 in our mapping and `timeout` lives
    // on this stack for the call. The timeout is relative, so measured on
    // CLOCK_MONOTONIC (futex(2)): a change of the wall clock cannot
    // stretch it. Every outcome (woken, EAGAIN, EINTR, ETIMEDOUT) means
    // "look at the count again", so the result is not needed.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &timeout as *const libc::timespec,
        );
    }
}

/// What the tests need to play a misbehaving worker.
#[cfg(test)]
impl Semaphore {
    pub fn count(&self) -> u32 {
        self.count.load(SeqCst)
    }
    pub fn waiters(&self) -> u32 {
        self.waiters.load(SeqCst)
    }
    pub fn set(&self, count: u32) {
        self.count.store(count, SeqCst);
    }
}
