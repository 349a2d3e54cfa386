//! Where an `ftp` upload ends. The classic client sends the file's bytes,
//! pauses, then `##` alone, and the classic server takes a read of exactly
//! `##` as the end. A server that reads late may find the last chunk and
//! `##` in one read, so a read that *ends* in `##` holds those two bytes
//! back: if the client then stays quiet for `upload_quiet` (or closes), it
//! was the end; if more bytes come, they were data after all. Pure: fed
//! reads and times, it says what to store.

use std::time::{Duration, Instant};

/// The end-of-upload mark.
pub const END_MARK: &[u8] = b"##";

/// What one read of an upload means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step<'a> {
    /// The `##` held back from the read before was data: store it first.
    pub held_was_data: bool,
    /// This read's bytes to store.
    pub data: &'a [u8],
    /// The upload is complete (after storing the above).
    pub complete: bool,
}

/// The `##` rules for one upload.
#[derive(Debug, Clone, Copy)]
pub struct EndOfUpload {
    quiet: Duration,
    /// When a read ending in `##` came, if the last one did.
    held_since: Option<Instant>,
}

impl EndOfUpload {
    /// `quiet`: the silence after a trailing `##` that ends the upload.
    pub fn new(quiet: Duration) -> EndOfUpload {
        EndOfUpload {
            quiet,
            held_since: None,
        }
    }

    /// A read (never empty) that came at `now`.
    pub fn read<'a>(&mut self, read: &'a [u8], now: Instant) -> Step<'a> {
        let held_was_data = self.held_since.take().is_some();
        if read == END_MARK {
            return Step {
                held_was_data,
                data: &[],
                complete: true,
            };
        }
        let data = match read.strip_suffix(END_MARK) {
            Some(data) => {
                self.held_since = Some(now);
                data
            }
            None => read,
        };
        Step {
            held_was_data,
            data,
            complete: false,
        }
    }

    /// When a held `##` becomes the end, if one is held.
    pub fn deadline(&self) -> Option<Instant> {
        self.held_since.map(|at| at + self.quiet)
    }

    /// Whether the client has been quiet long enough after a held `##`.
    pub fn quiet_by(&self, now: Instant) -> bool {
        self.deadline().is_some_and(|at| now >= at)
    }

    /// The client closed: the upload is complete only if its last read
    /// ended in `##` (EOF before `##` discards it).
    pub fn complete_at_eof(&self) -> bool {
        self.held_since.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUIET: Duration = Duration::from_millis(200);

    /// Feeds `reads` one after another, 1 ms apart; the bytes stored and
    /// whether a read completed the upload.
    fn feed(reads: &[&[u8]]) -> (Vec<u8>, bool, EndOfUpload, Instant) {
        let mut end = EndOfUpload::new(QUIET);
        let mut now = Instant::now();
        let mut stored = Vec::new();
        for read in reads {
            now += Duration::from_millis(1);
            let step = end.read(read, now);
            if step.held_was_data {
                stored.extend_from_slice(END_MARK);
            }
            stored.extend_from_slice(step.data);
            if step.complete {
                return (stored, true, end, now);
            }
        }
        (stored, false, end, now)
    }

    #[test]
    fn a_read_of_exactly_the_mark_ends_the_upload() {
        let (stored, complete, end, _) = feed(&[b"abc", b"def", b"##"]);
        assert_eq!((&stored[..], complete), (&b"abcdef"[..], true));
        assert_eq!(end.deadline(), None, "nothing held after the end");
    }

    #[test]
    fn a_mark_inside_or_split_across_reads_is_data() {
        let (stored, complete, end, _) = feed(&[b"a##b", b"#", b"#c", b"##x"]);
        assert_eq!((&stored[..], complete), (&b"a##b##c##x"[..], false));
        assert_eq!(end.deadline(), None);
    }

    #[test]
    fn a_trailing_mark_is_held_and_ends_the_upload_after_the_quiet_time() {
        let (stored, complete, end, at) = feed(&[b"abc", b"last##"]);
        assert_eq!((&stored[..], complete), (&b"abclast"[..], false));
        assert_eq!(end.deadline(), Some(at + QUIET));
        assert!(!end.quiet_by(at + QUIET - Duration::from_millis(1)));
        assert!(end.quiet_by(at + QUIET));
    }

    #[test]
    fn bytes_after_a_trailing_mark_make_it_data() {
        let (stored, complete, end, _) = feed(&[b"abc##", b"more"]);
        assert_eq!((&stored[..], complete), (&b"abc##more"[..], false));
        assert_eq!(end.deadline(), None, "the quiet timer is off again");
        // A later `##` alone still ends it, the held one stored before.
        let (stored, complete, _, _) = feed(&[b"abc##", b"##"]);
        assert_eq!((&stored[..], complete), (&b"abc##"[..], true));
        // A trailing mark again is held again, from its own read.
        let (stored, _, end, at) = feed(&[b"a##", b"b##"]);
        assert_eq!(stored, b"a##b");
        assert_eq!(end.deadline(), Some(at + QUIET));
    }

    #[test]
    fn eof_completes_only_after_a_trailing_mark() {
        let (_, _, end, _) = feed(&[b"abc"]);
        assert!(!end.complete_at_eof(), "EOF before ## discards");
        let (_, _, end, _) = feed(&[b"abc##"]);
        assert!(end.complete_at_eof());
        let (_, _, end, _) = feed(&[b"abc##", b"d"]);
        assert!(!end.complete_at_eof());
    }
}
