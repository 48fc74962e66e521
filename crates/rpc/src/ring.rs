//! Shared-memory rings under a same-host control connection.
//!
//! A local-cluster tiny job sends four control frames on its critical path
//! (a `LaunchTask` to each executor, a `StatusUpdate` back from each). Over
//! a Unix socket each costs a `send` and a `recv` — 1.3 µs of CPU together
//! on this kind of VM — and every poll of an idle reader is a `recv` that
//! finds nothing, on CPUs the threads with work share. A C model of the job
//! (a caller, a loop thread and two workers, all polling) took 13–16 µs per
//! round with the workers in other processes behind Unix sockets, 8.6–8.9
//! µs with them behind shared memory, and 5.3–8.6 µs with them as threads.
//!
//! So a local-cluster executor and its driver also share one memory file
//! (a sealed `memfd` the driver creates and the executor inherits), holding
//! one single-producer, single-consumer byte ring per direction. A writer
//! puts each frame — exactly the bytes it would write to the socket, tag
//! included — into the ring when it fits, and into the socket when it does
//! not. Every frame carries its sequence number in the ring, so the reader
//! takes the next frame from whichever side holds it; order never depends
//! on which transport was faster. The socket stays for frames too large for
//! the ring, for waking a reader that sleeps on it (an empty frame, sent
//! when the ring says its reader sleeps), and for the peer's end, which the
//! ring cannot show.
//!
//! Nothing in the ring is trusted more than the socket's bytes: lengths
//! are checked against the ring's size and the frame limit, frames are
//! authenticated as on the socket, and an entry whose sequence number was
//! already taken ends the connection, as a corrupt socket frame would.
//!
//! Layout: a 4 KiB header (magic, version, capacity, one "attached" flag
//! per side), then per direction a 256-byte control block — tail (writer),
//! head (reader), the reader's "sleeping" flag, the writer's count of socket
//! writes, each on its own cache line — and `capacity` bytes of data. An
//! entry is `len u32 LE | magic u32 LE | seq u64 LE | frame[len]`, padded
//! to 8 bytes; positions grow without bound and wrap modulo the capacity.

use crate::frame::RpcError;
use rustix::fs::{MemfdFlags, SealFlags};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

/// Bytes per direction: room for a burst of launches or status updates;
/// larger frames take the socket.
pub const DEFAULT_CAPACITY: usize = 1 << 20;

/// The environment variable through which an executor learns the number of
/// the ring file's descriptor it inherited.
pub const RING_FD_ENV: &str = "EMBER_CONTROL_RING_FD";

const MAGIC: u64 = u64::from_le_bytes(*b"EMBRING1");
const VERSION: u32 = 1;
const HEADER: usize = 4096;
const CONTROL: usize = 256;
const ENTRY_HEADER: usize = 16;
const ENTRY_MAGIC: u32 = 0x4652_4d45; // "EMRF"

/// Which end of a connection a process is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Driver,
    Executor,
}

/// One mapping of a connection's shared memory file.
pub struct RingFile {
    fd: OwnedFd,
    base: *mut u8,
    len: usize,
    cap: usize,
}

// SAFETY: the mapping is plain shared memory; every field written by more
// than one thread or process is accessed through atomics, and ring data
// only by the one writer and the one reader the protocol allows.
unsafe impl Send for RingFile {}
unsafe impl Sync for RingFile {}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not an ember ring file: {what}"))
}

fn total_len(cap: usize) -> usize {
    HEADER + 2 * (CONTROL + cap)
}

impl RingFile {
    /// Creates a sealed memory file for one connection, `capacity` bytes per
    /// direction (a power of two).
    pub fn create(capacity: usize) -> std::io::Result<Arc<RingFile>> {
        assert!(capacity.is_power_of_two() && capacity >= 4096, "ring capacity must be a power of two ≥ 4 KiB");
        let fd = rustix::fs::memfd_create("ember-control-ring", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
        rustix::fs::ftruncate(&fd, total_len(capacity) as u64)?;
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)?;
        let file = RingFile::map(fd, total_len(capacity), capacity)?;
        // SAFETY: the header lies within the fresh mapping, which nobody else sees yet.
        unsafe {
            (file.base as *mut u64).write(MAGIC);
            (file.base.add(8) as *mut u32).write(VERSION);
            (file.base.add(16) as *mut u64).write(capacity as u64);
        }
        Ok(Arc::new(file))
    }

    /// Maps a ring file made by [`create`](Self::create), checking that it
    /// is one and cannot shrink under the mapping.
    pub fn open(fd: OwnedFd) -> std::io::Result<Arc<RingFile>> {
        let seals = rustix::fs::fcntl_get_seals(&fd)?;
        if !seals.contains(SealFlags::SHRINK | SealFlags::GROW) {
            return Err(invalid("not sealed against resizing"));
        }
        let size = rustix::fs::fstat(&fd)?.st_size as usize;
        if size < HEADER {
            return Err(invalid("too small"));
        }
        let mut file = RingFile::map(fd, size, 0)?;
        // SAFETY: the mapping is at least HEADER bytes long.
        let (magic, version, cap) = unsafe {
            (
                (file.base as *const u64).read(),
                (file.base.add(8) as *const u32).read(),
                (file.base.add(16) as *const u64).read() as usize,
            )
        };
        if magic != MAGIC || version != VERSION {
            return Err(invalid("wrong magic or version"));
        }
        let expected = cap.checked_add(CONTROL).and_then(|x| x.checked_mul(2)).and_then(|x| x.checked_add(HEADER));
        if !cap.is_power_of_two() || cap < 4096 || expected != Some(size) {
            return Err(invalid("inconsistent capacity"));
        }
        file.cap = cap;
        Ok(Arc::new(file))
    }

    fn map(fd: OwnedFd, len: usize, cap: usize) -> std::io::Result<RingFile> {
        use rustix::mm::{MapFlags, ProtFlags};
        // SAFETY: a fresh shared mapping of a sealed file; it is unmapped in Drop only.
        let base = unsafe {
            rustix::mm::mmap(std::ptr::null_mut(), len, ProtFlags::READ | ProtFlags::WRITE, MapFlags::SHARED, &fd, 0)?
        };
        Ok(RingFile { fd, base: base.cast(), len, cap })
    }

    /// The descriptor a child process inherits.
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn atomic_u32(&self, offset: usize) -> &AtomicU32 {
        debug_assert!(offset + 4 <= self.len && offset.is_multiple_of(4));
        // SAFETY: in bounds and aligned (the mapping is page-aligned).
        unsafe { &*(self.base.add(offset) as *const AtomicU32) }
    }

    fn atomic_u64(&self, offset: usize) -> &AtomicU64 {
        debug_assert!(offset + 8 <= self.len && offset.is_multiple_of(8));
        // SAFETY: in bounds and aligned (the mapping is page-aligned).
        unsafe { &*(self.base.add(offset) as *const AtomicU64) }
    }

    fn attached_flag(&self, side: Side) -> &AtomicU32 {
        self.atomic_u32(match side {
            Side::Driver => 64,
            Side::Executor => 128,
        })
    }

    /// Announces that `side` reads and writes through this file from now on.
    pub fn mark_attached(&self, side: Side) {
        self.attached_flag(side).store(1, Ordering::Release);
    }

    pub fn is_attached(&self, side: Side) -> bool {
        self.attached_flag(side).load(Ordering::Acquire) == 1
    }

    /// How many bytes `from` has put into its ring so far (entries included).
    pub fn bytes_written(self: &Arc<Self>, from: Side) -> u64 {
        self.region(from).tail().load(Ordering::Acquire)
    }

    /// The region carrying frames written by `from`.
    fn region(self: &Arc<Self>, from: Side) -> Region {
        let index = match from {
            Side::Driver => 0,
            Side::Executor => 1,
        };
        Region { file: self.clone(), control: HEADER + index * (CONTROL + self.cap) }
    }

    /// The ring this side writes. One writer per direction: the caller
    /// keeps it behind the connection's writer lock.
    pub(crate) fn writer(self: &Arc<Self>, me: Side) -> RingWriter {
        let region = self.region(me);
        let tail = region.tail().load(Ordering::Acquire);
        RingWriter { region, tail }
    }

    /// The ring this side reads. One reader per direction: the caller
    /// keeps it inside the connection's one reader.
    pub(crate) fn reader(self: &Arc<Self>, me: Side) -> RingReader {
        let region = self.region(match me {
            Side::Driver => Side::Executor,
            Side::Executor => Side::Driver,
        });
        let head = region.head().load(Ordering::Acquire);
        RingReader { region, head }
    }
}

impl AsFd for RingFile {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for RingFile {
    fn drop(&mut self) {
        // SAFETY: mapped in `map` with this length; no reference into it outlives `self`.
        let _ = unsafe { rustix::mm::munmap(self.base.cast(), self.len) };
    }
}

/// One direction's control block and data.
struct Region {
    file: Arc<RingFile>,
    control: usize,
}

impl Region {
    fn tail(&self) -> &AtomicU64 {
        self.file.atomic_u64(self.control)
    }
    fn head(&self) -> &AtomicU64 {
        self.file.atomic_u64(self.control + 64)
    }
    fn sleeping(&self) -> &AtomicU32 {
        self.file.atomic_u32(self.control + 128)
    }
    fn socket_writes(&self) -> &AtomicU64 {
        self.file.atomic_u64(self.control + 192)
    }

    fn cap(&self) -> usize {
        self.file.cap
    }

    fn data(&self) -> *mut u8 {
        // SAFETY: the data area follows the control block inside the mapping.
        unsafe { self.file.base.add(self.control + CONTROL) }
    }

    /// Copies `src` in at ring position `pos`, wrapping at the end.
    fn copy_in(&self, pos: u64, src: &[u8]) {
        let off = (pos % self.cap() as u64) as usize;
        let first = src.len().min(self.cap() - off);
        // SAFETY: both pieces lie within the data area (`src.len()` ≤ capacity,
        // checked by the writer), which only this writer writes between the
        // reader's head and the next tail.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.data().add(off), first);
            std::ptr::copy_nonoverlapping(src.as_ptr().add(first), self.data(), src.len() - first);
        }
    }

    /// Copies ring bytes from position `pos` into `dst`, wrapping at the end.
    fn copy_out(&self, pos: u64, dst: &mut [u8]) {
        let off = (pos % self.cap() as u64) as usize;
        let first = dst.len().min(self.cap() - off);
        // SAFETY: as in `copy_in`; `dst.len()` ≤ capacity is checked by the reader.
        unsafe {
            std::ptr::copy_nonoverlapping(self.data().add(off), dst.as_mut_ptr(), first);
            std::ptr::copy_nonoverlapping(self.data(), dst.as_mut_ptr().add(first), dst.len() - first);
        }
    }
}

fn entry_len(frame: usize) -> usize {
    ENTRY_HEADER + frame.div_ceil(8) * 8
}

/// The writing end of one direction (one writer at a time: the connection's
/// writer lock serializes them).
pub(crate) struct RingWriter {
    region: Region,
    /// The tail as this writer last published it.
    tail: u64,
}

impl RingWriter {
    /// Appends a frame unless the ring lacks room for it; never waits.
    pub(crate) fn try_push(&mut self, seq: u64, frame: &[u8]) -> bool {
        let need = entry_len(frame.len());
        if need > self.region.cap() || frame.len() > u32::MAX as usize {
            return false;
        }
        let head = self.region.head().load(Ordering::Acquire);
        let used = self.tail.wrapping_sub(head);
        if used > self.region.cap() as u64 || used + need as u64 > self.region.cap() as u64 {
            return false;
        }
        let mut header = [0u8; ENTRY_HEADER];
        header[..4].copy_from_slice(&(frame.len() as u32).to_le_bytes());
        header[4..8].copy_from_slice(&ENTRY_MAGIC.to_le_bytes());
        header[8..].copy_from_slice(&seq.to_le_bytes());
        self.region.copy_in(self.tail, &header);
        self.region.copy_in(self.tail + ENTRY_HEADER as u64, frame);
        self.tail += need as u64;
        self.region.tail().store(self.tail, Ordering::Release);
        true
    }

    /// True if the reader has said it sleeps on the socket. Ordered after
    /// the frames pushed before it (with the reader's announcement and its
    /// last look at the ring, one of the two sides sees the other).
    pub(crate) fn reader_sleeping(&self) -> bool {
        fence(Ordering::SeqCst);
        self.region.sleeping().load(Ordering::Relaxed) != 0
    }

    /// Counts a write to the socket, so the reader knows to read it.
    pub(crate) fn note_socket_write(&self) {
        self.region.socket_writes().fetch_add(1, Ordering::Release);
    }
}

/// The reading end of one direction (one reader at a time).
pub(crate) struct RingReader {
    region: Region,
    /// The head as this reader last published it.
    head: u64,
}

impl RingReader {
    /// The next entry's sequence number and frame length, if one waits.
    pub(crate) fn peek(&self) -> Result<Option<(u64, usize)>, RpcError> {
        let tail = self.region.tail().load(Ordering::Acquire);
        let avail = tail.wrapping_sub(self.head);
        if avail == 0 {
            return Ok(None);
        }
        if avail < ENTRY_HEADER as u64 || avail > self.region.cap() as u64 {
            return Err(corrupt("its tail is out of range"));
        }
        let mut header = [0u8; ENTRY_HEADER];
        self.region.copy_out(self.head, &mut header);
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let magic = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
        let seq = u64::from_le_bytes(header[8..].try_into().expect("8 bytes"));
        if magic != ENTRY_MAGIC || entry_len(len) as u64 > avail {
            return Err(corrupt("an entry's header is damaged"));
        }
        Ok(Some((seq, len)))
    }

    /// Moves the entry [`peek`](Self::peek) reported (of frame length
    /// `len`) into `into` and frees its room.
    pub(crate) fn take(&mut self, len: usize, into: &mut Vec<u8>) {
        assert!(entry_len(len) <= self.region.cap(), "take the length peek reported");
        into.clear();
        into.resize(len, 0);
        self.region.copy_out(self.head + ENTRY_HEADER as u64, into);
        self.head += entry_len(len) as u64;
        self.region.head().store(self.head, Ordering::Release);
    }

    /// Announces (or withdraws) that the reader sleeps on the socket and
    /// must be woken through it.
    pub(crate) fn set_sleeping(&self, sleeping: bool) {
        self.region.sleeping().store(sleeping as u32, Ordering::SeqCst);
    }

    /// How many writes the peer has made to the socket so far.
    pub(crate) fn socket_writes(&self) -> u64 {
        self.region.socket_writes().load(Ordering::Acquire)
    }
}

fn corrupt(what: &str) -> RpcError {
    RpcError::Malformed(format!("shared-memory ring: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(i: u32, len: usize) -> Vec<u8> {
        (0..len).map(|j| (i as usize * 31 + j) as u8).collect()
    }

    #[test]
    fn frames_cross_in_order_with_their_sequence_numbers_around_the_wrap() {
        let file = RingFile::create(4096).unwrap();
        let mut w = file.writer(Side::Driver);
        let mut r = file.reader(Side::Executor);
        let mut buf = Vec::new();
        // 3,000 frames of varied length through 4 KiB: many wraps, some mid-entry.
        for i in 0..3000u32 {
            let f = frame(i, (i as usize * 37) % 1500 + 1);
            assert!(w.try_push(i as u64 + 10, &f));
            let (seq, len) = r.peek().unwrap().expect("an entry");
            assert_eq!((seq, len), (i as u64 + 10, f.len()));
            r.take(len, &mut buf);
            assert_eq!(buf, f);
            assert!(r.peek().unwrap().is_none());
        }
    }

    #[test]
    fn a_full_ring_refuses_until_the_reader_frees_room_and_directions_are_separate() {
        let file = RingFile::create(4096).unwrap();
        let mut w = file.writer(Side::Executor);
        let f = frame(1, 1000);
        let mut pushed = 0;
        while w.try_push(pushed, &f) {
            pushed += 1;
        }
        assert_eq!(pushed, 4, "4 entries of 1,016 bytes fit in 4 KiB");
        assert!(!w.try_push(9, &frame(2, 5000)), "larger than the ring");
        assert!(file.reader(Side::Executor).peek().unwrap().is_none(), "the other direction is empty");
        let mut r = file.reader(Side::Driver);
        let mut buf = Vec::new();
        let (_, len) = r.peek().unwrap().unwrap();
        r.take(len, &mut buf);
        assert!(w.try_push(pushed, &f), "room again");
    }

    #[test]
    fn an_inherited_descriptor_maps_the_same_memory_and_attachment_is_per_side() {
        let file = RingFile::create(8192).unwrap();
        let dup = rustix::io::fcntl_dupfd_cloexec(&file, 0).unwrap();
        let other = RingFile::open(dup).unwrap();
        assert!(!other.is_attached(Side::Executor));
        file.mark_attached(Side::Executor);
        assert!(other.is_attached(Side::Executor) && !other.is_attached(Side::Driver));
        let mut w = other.writer(Side::Executor);
        assert!(w.try_push(0, b"hello"));
        w.note_socket_write();
        let mut r = file.reader(Side::Driver);
        assert_eq!(r.socket_writes(), 1);
        r.set_sleeping(true);
        assert!(w.reader_sleeping());
        r.set_sleeping(false);
        assert!(!w.reader_sleeping());
        let mut buf = Vec::new();
        let (seq, len) = r.peek().unwrap().unwrap();
        r.take(len, &mut buf);
        assert_eq!((seq, &buf[..]), (0, &b"hello"[..]));
    }

    #[test]
    fn files_that_are_not_rings_are_refused() {
        let plain = rustix::fs::memfd_create("x", MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&plain, total_len(4096) as u64).unwrap();
        let err = RingFile::open(plain).err().expect("unsealed");
        assert!(err.to_string().contains("sealed"), "{err}");
        let sealed = rustix::fs::memfd_create("y", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING).unwrap();
        rustix::fs::ftruncate(&sealed, total_len(4096) as u64).unwrap();
        rustix::fs::fcntl_add_seals(&sealed, SealFlags::SHRINK | SealFlags::GROW).unwrap();
        let err = RingFile::open(sealed).err().expect("no magic");
        assert!(err.to_string().contains("magic"), "{err}");
    }

    #[test]
    fn damaged_control_words_and_entries_are_errors_not_reads_out_of_bounds() {
        let file = RingFile::create(4096).unwrap();
        let mut w = file.writer(Side::Driver);
        assert!(w.try_push(0, &frame(0, 100)));
        let r = file.reader(Side::Executor);
        // A tail beyond the capacity.
        let region = file.region(Side::Driver);
        let tail = region.tail();
        tail.store(1 << 40, Ordering::Release);
        assert!(matches!(r.peek(), Err(RpcError::Malformed(m)) if m.contains("tail")));
        tail.store(entry_len(100) as u64, Ordering::Release);
        // An entry whose length runs past what was written.
        file.region(Side::Driver).copy_in(0, &4000u32.to_le_bytes());
        assert!(matches!(r.peek(), Err(RpcError::Malformed(m)) if m.contains("header")));
        file.region(Side::Driver).copy_in(0, &100u32.to_le_bytes());
        file.region(Side::Driver).copy_in(4, &0u32.to_le_bytes());
        assert!(matches!(r.peek(), Err(RpcError::Malformed(m)) if m.contains("header")));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Any interleaving of pushes and takes delivers exactly the pushed
        /// frames, in order, and refuses a push only when it would not fit.
        #[test]
        fn pushes_and_takes_in_any_interleaving(ops in proptest::collection::vec((any::<bool>(), 0usize..2100), 1..400)) {
            let file = RingFile::create(4096).unwrap();
            let mut w = file.writer(Side::Driver);
            let mut r = file.reader(Side::Executor);
            let mut queued: std::collections::VecDeque<(u64, Vec<u8>)> = Default::default();
            let (mut seq, mut buf) = (0u64, Vec::new());
            for (push, len) in ops {
                if push {
                    let f = frame(seq as u32, len);
                    let used: usize = queued.iter().map(|(_, f)| entry_len(f.len())).sum();
                    let fits = used + entry_len(len) <= 4096;
                    prop_assert_eq!(w.try_push(seq, &f), fits);
                    if fits {
                        queued.push_back((seq, f));
                        seq += 1;
                    }
                } else {
                    match (r.peek().unwrap(), queued.pop_front()) {
                        (None, None) => {}
                        (Some((s, l)), Some((want_seq, want))) => {
                            prop_assert_eq!((s, l), (want_seq, want.len()));
                            r.take(l, &mut buf);
                            prop_assert_eq!(&buf, &want);
                        }
                        (got, want) => prop_assert!(false, "got {:?}, wanted {:?}", got, want.map(|w| w.0)),
                    }
                }
            }
        }
    }
}
