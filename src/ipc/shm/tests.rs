//! The shm transport against a worker thread (or a forked worker), woken
//! the way forkd's loop is: by the doorbell, through mio. The threads exist
//! only in these tests, standing in for worker processes; forkd itself
//! never starts one.

use std::os::fd::IntoRawFd;
use std::rc::Rc;
use std::sync::atomic::Ordering::SeqCst;
use std::thread;
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::sys::mman::shm_open;
use nix::sys::stat::Mode;

use super::region::{Region, Ring, Stamp, PAGE, SLOTS};
use super::*;

/// Removes a test's segment however the test ends.
struct Segment(String);

impl Drop for Segment {
    fn drop(&mut self) {
        let _ = names::Kind::Shm.unlink(&self.0);
    }
}

/// A channel named after the test's `pool`, so tests running side by side
/// never share a segment.
fn test_channel(pool: &str, max_frame: usize) -> (Segment, Parent, Child) {
    let id = ChannelId {
        pid: std::process::id(),
        pool,
        worker: 0,
    };
    let [name] = names(id);
    let segment = Segment(name);
    let (parent, child) = channel(id, max_frame).expect("the channel is created");
    (segment, parent, child)
}

/// The supervisor's side of a test: a mio poll on the doorbell.
struct Supervisor {
    poll: mio::Poll,
    events: mio::Events,
}

impl Supervisor {
    fn new(parent: &mut Parent) -> Supervisor {
        let poll = mio::Poll::new().unwrap();
        parent.register(poll.registry(), Token(1)).unwrap();
        Supervisor {
            poll,
            events: mio::Events::with_capacity(4),
        }
    }

    /// The next response, flushing and receiving on every wake-up as the
    /// loop does. A lost wake-up fails here after 20 s.
    fn next(&mut self, parent: &mut Parent) -> Vec<u8> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            parent.flush().expect("flush");
            if let Some(frame) = parent.recv().expect("recv") {
                return frame;
            }
            let left = deadline
                .checked_duration_since(Instant::now())
                .expect("the doorbell rang within 20 s");
            match self.poll.poll(&mut self.events, Some(left)) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => other.unwrap(),
            }
        }
    }
}

/// A worker that answers each request with its bytes reversed; returns how
/// many it answered.
fn reversing_worker(mut child: Child) -> thread::JoinHandle<Result<usize, ChannelError>> {
    thread::spawn(move || {
        let mut answered = 0;
        while let Some(request) = child.recv()? {
            let response: Vec<u8> = request.iter().rev().copied().collect();
            child.send(&response)?;
            answered += 1;
        }
        Ok(answered)
    })
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// Waits (with a deadline, not a sleep) until `done` holds.
fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "{what} within 20 s");
        thread::yield_now();
    }
}

#[test]
fn frames_of_every_size_cross_both_ways() {
    let (_segment, mut parent, child) = test_channel("sizes", 16 << 20);
    let worker = reversing_worker(child);
    let mut supervisor = Supervisor::new(&mut parent);
    for len in [0usize, 1, 64, 64 << 10, 1 << 20, 8 << 20] {
        let payload = pattern(len);
        parent.send(Rc::new(payload.clone())).unwrap();
        let got = supervisor.next(&mut parent);
        assert_eq!(got.len(), len);
        assert!(
            got.iter().rev().eq(payload.iter()),
            "{len}-byte payload reversed"
        );
    }
    drop(parent);
    assert_eq!(worker.join().unwrap().unwrap(), 6);
}

#[test]
fn large_and_small_frames_sharing_slots_are_copied_out_whole() {
    // Sent in one burst, the frames are packed: a slot holds the end of a
    // large frame (copied into its own Vec) and the start of the next.
    let (_segment, mut parent, child) = test_channel("shared-slots", 1 << 20);
    let worker = reversing_worker(child);
    let mut supervisor = Supervisor::new(&mut parent);
    let frames = [
        pattern(3 * (64 << 10) + 5),
        b"small".to_vec(),
        pattern(64 << 10),
        pattern(7),
        pattern((64 << 10) - 3),
        Vec::new(),
    ];
    for f in &frames {
        parent.send(Rc::new(f.clone())).unwrap();
    }
    for f in &frames {
        let got = supervisor.next(&mut parent);
        assert_eq!(got.len(), f.len());
        assert!(got.iter().rev().eq(f.iter()), "frames come back whole");
    }
    drop(parent);
    assert_eq!(worker.join().unwrap().unwrap(), frames.len());
}

#[test]
fn a_thousand_small_frames_pipeline_through_a_full_ring() {
    // 4 KiB slots: the thousand frames (about 64 KiB) overfill the request
    // ring, so flushing waits for the worker to free slots.
    let (_segment, mut parent, child) = test_channel("pipeline", 100);
    assert_eq!(parent.rings.region.slot_size(), PAGE);
    let worker = reversing_worker(child);
    let mut supervisor = Supervisor::new(&mut parent);
    let frames: Vec<Vec<u8>> = (0..1000u32)
        .map(|i| {
            let mut f = i.to_be_bytes().to_vec();
            f.resize(20 + i as usize % 80, i as u8);
            f
        })
        .collect();
    for f in &frames {
        parent.send(Rc::new(f.clone())).unwrap();
    }
    assert!(parent.queued() > 0, "the ring filled up");
    for f in &frames {
        let got = supervisor.next(&mut parent);
        assert!(got.iter().rev().eq(f.iter()), "frames come back in order");
    }
    assert_eq!(parent.queued(), 0);
    drop(parent);
    assert_eq!(worker.join().unwrap().unwrap(), 1000);
}

/// What `Parent::recv` makes of a response ring a worker thread scribbled on.
fn recv_after(pool: &str, scribble: impl FnOnce(&Region) + Send + 'static) -> Result<(), String> {
    let (_segment, mut parent, child) = test_channel(pool, 1 << 20);
    let child = thread::spawn(move || {
        scribble(&child.rings.region);
        child
    })
    .join()
    .unwrap();
    let got = parent.recv();
    drop(child);
    match got {
        Err(ChannelError::Corrupt(why)) => Err(why),
        other => panic!("{pool}: expected Corrupt, got {other:?}"),
    }
}

#[test]
fn a_worker_scribbling_on_the_response_ring_makes_recv_corrupt() {
    let stamp = |r: &Region, chunk, len| {
        Stamp { chunk, len }.store(&r.control(Ring::Responses).stamps[0]);
    };
    // A token with a length past the slot.
    let why = recv_after("scribble-length", move |r| {
        stamp(r, 0, u32::MAX);
        r.control(Ring::Responses).full.give().unwrap();
    })
    .unwrap_err();
    assert!(why.contains("slot 0 claims 4294967295 bytes"), "{why}");
    // A stale stamp: the chunk this slot held a whole round of the ring ago.
    let why = recv_after("scribble-stale", move |r| {
        stamp(r, 0u32.wrapping_sub(SLOTS), 8);
        r.control(Ring::Responses).full.give().unwrap();
    })
    .unwrap_err();
    assert!(
        why.contains("chunk 0 was signalled, but slot 0 holds Stamp { chunk: 4294967280, len: 8 }"),
        "{why}"
    );
    // A token for a chunk that was never written (an empty chunk looks the
    // same): the slot is still free.
    let why = recv_after("scribble-token", |r| {
        r.control(Ring::Responses).full.give().unwrap();
    })
    .unwrap_err();
    assert!(
        why.contains("chunk 0 was signalled, but slot 0 holds Stamp { chunk: 0, len: 0 }"),
        "{why}"
    );
    // A slot stamped with another chunk of the stream than the next one.
    let why = recv_after("scribble-chunk", move |r| {
        stamp(r, 1000, 8);
        r.control(Ring::Responses).full.give().unwrap();
    })
    .unwrap_err();
    assert!(why.contains("chunk: 1000"), "{why}");
    // A semaphore count no ring can have.
    let why = recv_after("scribble-count", |r| {
        r.control(Ring::Responses).full.set(0xdead_beef);
    })
    .unwrap_err();
    assert!(why.contains("full semaphore holds 3735928559"), "{why}");
}

#[test]
fn a_worker_lying_about_free_request_slots_makes_flush_corrupt() {
    let (_segment, mut parent, child) = test_channel("scribble-room", 100);
    for _ in 0..SLOTS + 1 {
        parent.send(Rc::new(vec![1; 96])).unwrap();
    }
    assert_eq!(parent.queued(), 1, "sixteen slots taken, one frame waits");
    // A free-slot token without a slot read.
    thread::spawn(move || child.rings.region.control(Ring::Requests).empty.give())
        .join()
        .unwrap()
        .unwrap();
    match parent.flush() {
        Err(ChannelError::Corrupt(why)) => {
            assert!(
                why.contains("a free slot was signalled for chunk 16, but slot 0 holds"),
                "{why}"
            )
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn random_garbage_over_the_header_and_response_ring_never_panics_or_hangs() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut random_page = || {
        (0..PAGE)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect::<Vec<u8>>()
    };
    for round in 0..32 {
        let (_segment, mut parent, child) = test_channel(&format!("garbage-{round}"), 1 << 20);
        let (header, control) = (random_page(), random_page());
        let child = thread::spawn(move || {
            child.rings.region.scribble(None, &header);
            child.rings.region.scribble(Some(Ring::Responses), &control);
            child
        })
        .join()
        .unwrap();
        for _ in 0..3 {
            let got = parent.recv();
            assert!(!matches!(got, Ok(Some(_))), "round {round}: {got:?}");
        }
        let _ = parent.send(Rc::new(vec![0; 100_000]));
        drop(parent);
        drop(child);
    }
}

#[test]
fn dropping_the_parent_unlinks_the_segment_and_releases_a_blocked_recv() {
    let (segment, mut parent, mut child) = test_channel("drop-recv", 1 << 20);
    let (returned_tx, returned) = std::sync::mpsc::channel();
    let worker = thread::spawn(move || {
        let first = child.recv().map(|f| f.map(<[u8]>::to_vec));
        let second = child.recv().map(|f| f.map(<[u8]>::to_vec));
        returned_tx.send(Instant::now()).unwrap();
        (first.unwrap(), second.unwrap())
    });
    parent.send(Rc::new(b"hello".to_vec())).unwrap();
    let requests = &parent.rings.region.control(Ring::Requests).full;
    wait_until("the worker blocks in its second recv", || {
        requests.waiters() == 1 && requests.count() == 0
    });
    let dropped = Instant::now();
    drop(parent);
    let returned = returned.recv_timeout(Duration::from_secs(20)).unwrap();
    assert_eq!(worker.join().unwrap(), (Some(b"hello".to_vec()), None));
    assert!(
        returned.duration_since(dropped) < WORKER_POLL / 2,
        "woken by the drop, not by its once-a-second look"
    );
    let reopened = shm_open(segment.0.as_str(), OFlag::O_RDWR, Mode::empty());
    assert_eq!(reopened.err(), Some(Errno::ENOENT));
}

#[test]
fn dropping_the_parent_releases_a_send_blocked_on_a_full_ring() {
    let (_segment, parent, mut child) = test_channel("drop-send", 100);
    let worker = thread::spawn(move || -> Result<(), ChannelError> {
        loop {
            child.send(&[5; 100])?;
        }
    });
    let responses = &parent.rings.region.control(Ring::Responses).empty;
    wait_until("the worker fills the response ring and blocks", || {
        responses.count() == 0 && responses.waiters() == 1
    });
    drop(parent);
    assert!(matches!(worker.join().unwrap(), Err(ChannelError::Closed)));
}

#[test]
fn frames_over_max_frame_are_refused_at_both_ends() {
    let (_segment, mut parent, mut child) = test_channel("too-large", 1000);
    let too_large = |r: Result<(), ChannelError>| {
        matches!(
            r,
            Err(ChannelError::Frame(FrameError::TooLarge {
                len: 1001,
                max: 1000
            }))
        )
    };
    assert!(too_large(parent.send(Rc::new(vec![0; 1001]))));
    assert_eq!(parent.queued(), 0);
    assert!(too_large(child.send(&[0; 1001])));
    // A worker that ignores the limit is stopped at the supervisor's
    // decoder, before the payload is buffered.
    child.max_frame = 1 << 20;
    child.send(&[7; 1001]).unwrap();
    assert!(matches!(
        parent.recv(),
        Err(ChannelError::Frame(FrameError::TooLarge { len: 1001, .. }))
    ));
}

#[test]
fn an_exec_worker_reopens_the_channel_by_name() {
    let (segment, mut parent, child) = test_channel("exec", 1 << 16);
    let setup = child.exec_setup();
    let fd = child.doorbell.as_raw_fd();
    assert_eq!(setup.keep, vec![fd]);
    assert_eq!(child.fds(), vec![fd]);
    assert_eq!(
        setup.env,
        vec![
            (ENV_NAME.to_string(), segment.0.clone()),
            (ENV_DOORBELL.to_string(), fd.to_string())
        ]
    );
    // What from_env does once it has read the environment (which tests
    // running side by side must not set).
    let inherited = child.doorbell.try_clone().unwrap().into_raw_fd();
    let doorbell = inherited_doorbell(inherited).unwrap();
    let worker = Child::new(
        Region::attach(&segment.0).unwrap(),
        segment.0.clone(),
        doorbell,
        1 << 16,
    );
    drop(child);
    let worker = reversing_worker(worker);
    let mut supervisor = Supervisor::new(&mut parent);
    parent.send(Rc::new(b"abc".to_vec())).unwrap();
    assert_eq!(supervisor.next(&mut parent), b"cba");
    drop(parent);
    assert_eq!(worker.join().unwrap().unwrap(), 1);
}

#[test]
fn attach_refuses_what_is_not_a_live_forkd_channel() {
    let (segment, parent, _child) = test_channel("attach", 1 << 16);
    parent
        .rings
        .region
        .header()
        .magic
        .store(0x1234_5678, SeqCst);
    match Region::attach(&segment.0) {
        Err(ChannelError::Corrupt(why)) => assert!(why.contains("magic 0x12345678"), "{why}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    drop(parent);
    assert!(matches!(
        Region::attach(&segment.0),
        Err(ChannelError::Closed)
    ));
    let (read, _write) = nix::unistd::pipe().unwrap();
    let err = inherited_doorbell(read.as_raw_fd())
        .unwrap_err()
        .to_string();
    assert!(err.contains("is not an eventfd"), "{err}");
    assert!(inherited_doorbell(1).is_err());
}

#[test]
fn a_forked_worker_serves_through_the_mapping_it_inherits() {
    let (_segment, mut parent, mut child) = test_channel("fork", 1 << 20);
    let pid = crate::process::fork_worker(move || {
        while let Ok(Some(request)) = child.recv() {
            let reply: Vec<u8> = request.iter().rev().copied().collect();
            if child.send(&reply).is_err() {
                return 1;
            }
        }
        0
    })
    .unwrap();
    let mut supervisor = Supervisor::new(&mut parent);
    for len in [0, 100, 1 << 20] {
        let payload = pattern(len);
        parent.send(Rc::new(payload.clone())).unwrap();
        assert!(supervisor.next(&mut parent).iter().rev().eq(payload.iter()));
    }
    drop(parent);
    let status = nix::sys::wait::waitpid(pid, None).unwrap();
    assert_eq!(status, nix::sys::wait::WaitStatus::Exited(pid, 0));
}

#[test]
fn slots_shrink_to_the_largest_frame_in_whole_pages() {
    assert_eq!(slot_size_for(0), PAGE);
    assert_eq!(slot_size_for(PAGE - frame::HEADER), PAGE);
    assert_eq!(slot_size_for(PAGE - frame::HEADER + 1), 2 * PAGE);
    assert_eq!(slot_size_for(1 << 30), MAX_SLOT);
    assert_eq!(slot_size_for(usize::MAX), MAX_SLOT);
}

/// One frame in flight at a time, the loop waiting in `poll` before each
/// response: every response must wake it, with nobody reading the
/// doorbell (`responses` of them already sit in its counter).
fn round_trips_each_wake_the_loop(parent: &mut Parent, supervisor: &mut Supervisor, n: usize) {
    for i in 0..n {
        parent.send(Rc::new(pattern(i % 100))).unwrap();
        let got = loop {
            if let Some(frame) = parent.recv().unwrap() {
                break frame;
            }
            match supervisor
                .poll
                .poll(&mut supervisor.events, Some(Duration::from_secs(10)))
            {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => other.unwrap(),
            }
            assert!(
                !supervisor.events.is_empty(),
                "round trip {i}: the doorbell woke the loop within 10 s"
            );
        };
        assert_eq!(got.len(), i % 100);
    }
}

#[test]
fn every_response_wakes_the_loop_though_the_doorbell_is_never_read() {
    let (_segment, mut parent, child) = test_channel("undrained", 1 << 10);
    let worker = reversing_worker(child);
    let mut supervisor = Supervisor::new(&mut parent);
    round_trips_each_wake_the_loop(&mut parent, &mut supervisor, 300);
    drop(parent);
    assert_eq!(worker.join().unwrap().unwrap(), 300);
}

#[test]
fn a_full_doorbell_counter_is_reset_so_the_loop_still_wakes() {
    let (_segment, mut parent, child) = test_channel("full-doorbell", 1 << 10);
    // The largest count an eventfd holds: the worker's next ring fails
    // with EAGAIN and must reset the counter to make an edge.
    let most = (u64::MAX - 1).to_ne_bytes();
    assert_eq!(nix::unistd::write(&parent.doorbell, &most), Ok(8));
    let worker = reversing_worker(child);
    let mut supervisor = Supervisor::new(&mut parent);
    // Registering a readable eventfd reports it once; take that event.
    supervisor
        .poll
        .poll(&mut supervisor.events, Some(Duration::ZERO))
        .unwrap();
    round_trips_each_wake_the_loop(&mut parent, &mut supervisor, 20);
    drop(parent);
    assert_eq!(worker.join().unwrap().unwrap(), 20);
}
