//! A connection's receiving half as a plain non-blocking socket, for
//! processes whose own threads read their control connection.
//!
//! An executor used to read the driver's messages on its tokio I/O thread
//! and hand each `LaunchTask` to a task thread: on two cores that was one
//! more thread polling beside the task threads, and one hand-off between
//! two threads on every task's path. A [`BlockingReader`] is read by
//! whichever thread is idle — it takes the next message without blocking
//! ([`try_recv`](BlockingReader::try_recv)) or sleeps on the socket
//! ([`wait`](BlockingReader::wait)) — so a task thread reads its own
//! `LaunchTask` and runs it.
//!
//! [`detach`] moves a connection there after the handshake. The socket
//! leaves tokio's reactor, and comes back only while a writer waits for
//! room in it: arriving data then wakes nobody but the thread waiting on it. Frames,
//! tags and sequence numbers are exactly those of [`ConnReader`].
//!
//! [`detach_with_ring`] also gives both halves a shared-memory ring
//! ([`crate::ring`]): the reader then takes each frame, by its sequence
//! number, from the ring or the socket, and reads the socket only when the
//! peer's count of socket writes moved, after a sleep, when part of a frame
//! is pending, or every [`SOCKET_LOOK_EVERY`]th poll — so an idle reader
//! polls memory, not the kernel, and still sees the peer's end.

use crate::frame::{ConnReader, ConnWriter, FrameKey, RpcError, WriteHalf, WriteOnly, TAG};
use crate::ring::{RingFile, RingReader, Side};
use crate::stream::StdStream;
use serde::de::DeserializeOwned;
use std::cell::Cell;
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

/// With a ring, an idle reader still reads the socket on every this-many
/// polls, to see the peer's end while it never sleeps.
pub const SOCKET_LOOK_EVERY: u32 = 64;

/// Bytes read from the socket per call, at least.
const READ_CHUNK: usize = 64 << 10;
/// A buffer grown past this by one large frame is released once it is read.
const KEEP_CAPACITY: usize = 4 << 20;

/// The receiving half of an authenticated connection, read without tokio.
pub struct BlockingReader {
    stream: StdStream,
    /// Bytes from the socket; `buf[start..end]` is not yet parsed.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The current frame's messages not yet returned: `buf[msg..msg_end]`.
    msg: usize,
    msg_end: usize,
    max_frame: usize,
    key: FrameKey,
    direction: u8,
    seq: u64,
    ring: Option<RingInput>,
}

/// A reader's side of a shared-memory ring.
struct RingInput {
    ring: RingReader,
    /// The current frame, when it came from the ring.
    frame: Vec<u8>,
    /// The current frame's messages are in `frame`, not the socket buffer.
    current: bool,
    /// The peer's socket-write count when this reader last read the socket.
    seen_writes: u64,
    polls: u32,
    /// Set after a sleep on the socket: read it at the next poll.
    look: Cell<bool>,
    /// The socket has ended; only the ring may still hold frames.
    closed: bool,
}

/// Moves a connection's reading to a [`BlockingReader`] and its writing to
/// a plain socket, registered with tokio only while a writer waits for room
/// (so the writer must be flushed on a runtime, as a `SharedWriter` does).
/// Call it before the writer is shared.
pub fn detach(reader: ConnReader, writer: ConnWriter) -> Result<(BlockingReader, ConnWriter), RpcError> {
    detach_with_ring(reader, writer, None)
}

/// [`detach`], with frames also crossing `ring` (this process being `side`)
/// in both directions from now on. Both ends must attach it, each after the
/// last frame it reads with a tokio reader.
pub fn detach_with_ring(
    reader: ConnReader,
    writer: ConnWriter,
    ring: Option<(Arc<RingFile>, Side)>,
) -> Result<(BlockingReader, ConnWriter), RpcError> {
    let ConnReader { inner, key, direction, seq, pending, .. } = reader;
    // Bytes the codec has read past the frames it returned stay ahead of
    // anything still in the socket.
    let mut unread = pending.to_vec();
    let framed_from = unread.len();
    unread.extend_from_slice(inner.read_buffer());
    let read_half = inner.into_inner();
    let ConnWriter { inner: write_half, key: wkey, direction: wdir, seq: wseq, max_frame, out, open, .. } = writer;
    let write_half = match Arc::try_unwrap(write_half) {
        Ok(WriteHalf::Tokio(h)) => h,
        _ => return Err(RpcError::Malformed("the connection is already shared or detached".into())),
    };
    let stream = crate::stream::reunite(read_half, write_half)?;
    stream.set_nonblocking(true)?;
    let for_writes = stream.try_clone()?;
    let end = unread.len();
    let mut buf = unread;
    buf.resize(end.max(READ_CHUNK), 0);
    let reader = BlockingReader {
        stream,
        buf,
        start: framed_from,
        end,
        msg: 0,
        msg_end: framed_from,
        max_frame,
        key,
        direction,
        seq,
        ring: ring.as_ref().map(|(file, side)| RingInput {
            ring: file.reader(*side),
            frame: Vec::new(),
            current: false,
            seen_writes: 0,
            polls: 0,
            look: Cell::new(true),
            closed: false,
        }),
    };
    let writer = ConnWriter {
        inner: Arc::new(WriteHalf::WriteOnly(WriteOnly(for_writes))),
        key: wkey,
        direction: wdir,
        seq: wseq,
        max_frame,
        out,
        open,
        ring: ring.map(|(file, side)| file.writer(side)),
    };
    Ok((reader, writer))
}

impl BlockingReader {
    /// The next message if one has arrived; never blocks. A frame is
    /// authenticated whole before its first message is decoded.
    pub fn try_recv<T: DeserializeOwned>(&mut self) -> Result<Option<T>, RpcError> {
        if self.msg == self.msg_end && !self.next_frame()? {
            return Ok(None);
        }
        let frame = match &self.ring {
            Some(input) if input.current => &input.frame,
            _ => &self.buf,
        };
        let (msg, rest) = postcard::take_from_bytes::<T>(&frame[self.msg..self.msg_end])
            .map_err(|e| RpcError::Malformed(format!("decoding: {e}")))?;
        self.msg = self.msg_end - rest.len();
        Ok(Some(msg))
    }

    /// True if a message already read waits to be returned: then the
    /// socket need not be waited on. (Part of a frame does not count: the
    /// rest must come from the socket.)
    pub fn has_buffered(&self) -> bool {
        self.msg < self.msg_end
            || self.next_frame_len().is_some_and(|len| self.end - self.start >= 4 + len)
            || self.ring_has_next()
    }

    /// True if the ring holds the next frame (or something wrong with it,
    /// which the next read reports). A later frame there waits for one on
    /// the socket, which wakes a sleeper by itself.
    fn ring_has_next(&self) -> bool {
        self.ring.as_ref().is_some_and(|input| match input.ring.peek() {
            Ok(Some((seq, _))) => seq <= self.seq,
            Ok(None) => false,
            Err(_) => true,
        })
    }

    /// Sleeps until the connection has bytes to read (or has closed), or
    /// until `timeout` passes.
    pub fn wait(&self, timeout: Duration) -> Result<(), RpcError> {
        sleep_until_readable([self], None, timeout)
    }

    /// The length of the next frame's body, once its header has arrived.
    fn next_frame_len(&self) -> Option<usize> {
        let header = self.buf.get(self.start..self.start + 4).filter(|_| self.end - self.start >= 4)?;
        Some(u32::from_be_bytes(header.try_into().expect("4 bytes")) as usize)
    }

    /// Makes the next complete frame current; false if none has arrived.
    fn next_frame(&mut self) -> Result<bool, RpcError> {
        loop {
            // A socket frame counts as the next one only if the ring does not
            // hold that number; it was received before this look at the ring,
            // so a frame written to the ring before it is visible here.
            let socket_frame = match self.next_frame_len() {
                Some(len) if len > self.max_frame => {
                    return Err(RpcError::Malformed(format!(
                        "a frame of {len} bytes exceeds the limit of {} bytes",
                        self.max_frame
                    )))
                }
                Some(len) => (self.end - self.start >= 4 + len).then_some(len),
                None => None,
            };
            if self.take_ring_frame()? {
                if self.msg < self.msg_end {
                    return Ok(true);
                }
                continue;
            }
            if let Some(len) = socket_frame {
                let body = self.start + 4..self.start + 4 + len;
                self.start = body.end;
                self.key.open(self.direction, self.seq, &mut self.buf[body.clone()])?;
                self.seq += 1;
                (self.msg, self.msg_end) = (body.start + TAG, body.end);
                if len > TAG {
                    return Ok(true);
                }
                if self.ring.is_none() {
                    return Err(RpcError::Malformed("a frame without messages".into()));
                }
                // An empty frame only wakes a reader that slept on the socket.
                continue;
            }
            if !self.should_read_socket()? {
                return Ok(false);
            }
            self.make_room(4 + self.next_frame_len().unwrap_or(0));
            match self.fill() {
                Ok(true) => {}
                Ok(false) => return Ok(false),
                Err(RpcError::Closed) if self.ring.is_some() => {
                    // Frames the peer put in the ring before it went still count.
                    if let Some(input) = self.ring.as_mut() {
                        input.closed = true;
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Makes the ring's next entry current if it is the next frame.
    fn take_ring_frame(&mut self) -> Result<bool, RpcError> {
        let Some(input) = self.ring.as_mut() else { return Ok(false) };
        input.current = false;
        let Some((seq, len)) = input.ring.peek()? else { return Ok(false) };
        if seq < self.seq {
            return Err(RpcError::Malformed(format!(
                "a ring frame numbered {seq} arrived after frame {}",
                self.seq - 1
            )));
        }
        if seq > self.seq {
            // The frame before it took the socket.
            return Ok(false);
        }
        if len < 4 + TAG || len - 4 > self.max_frame {
            return Err(RpcError::Malformed(format!("a ring frame of {len} bytes is out of bounds")));
        }
        input.ring.take(len, &mut input.frame);
        if u32::from_be_bytes(input.frame[..4].try_into().expect("4 bytes")) as usize != len - 4 {
            return Err(RpcError::Malformed("a ring frame's length prefix disagrees with its entry".into()));
        }
        self.key.open(self.direction, self.seq, &mut input.frame[4..])?;
        self.seq += 1;
        input.current = true;
        (self.msg, self.msg_end) = (4 + TAG, len);
        Ok(true)
    }

    /// Whether to read the socket now: always without a ring; with one, when
    /// part of a frame waits, the peer wrote to the socket, a sleep ended, or
    /// every [`SOCKET_LOOK_EVERY`]th poll.
    fn should_read_socket(&mut self) -> Result<bool, RpcError> {
        let partial = self.end > self.start;
        let Some(input) = self.ring.as_mut() else { return Ok(true) };
        if input.closed {
            return Err(RpcError::Closed);
        }
        input.polls = input.polls.wrapping_add(1);
        let writes = input.ring.socket_writes();
        let look = input.look.replace(false) || input.polls.is_multiple_of(SOCKET_LOOK_EVERY);
        if partial || look || writes != input.seen_writes {
            input.seen_writes = writes;
            return Ok(true);
        }
        Ok(false)
    }

    /// Ensures the buffer can hold `need` bytes from `start`, with room to
    /// read into. Only called with no message pending.
    fn make_room(&mut self, need: usize) {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
            if self.buf.len() > KEEP_CAPACITY && need <= READ_CHUNK {
                self.buf = vec![0; READ_CHUNK];
            }
        }
        if self.start + need.max(self.end - self.start + READ_CHUNK / 4) > self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        let want = need.max(self.end + READ_CHUNK / 4);
        if want > self.buf.len() {
            self.buf.resize(want.max(READ_CHUNK), 0);
        }
    }

    /// Reads what the socket holds; false if it held nothing.
    fn fill(&mut self) -> Result<bool, RpcError> {
        loop {
            match (&self.stream).read(&mut self.buf[self.end..]) {
                Ok(0) => return Err(RpcError::Closed),
                Ok(n) => {
                    self.end += n;
                    return Ok(true);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(RpcError::Io(e)),
            }
        }
    }
}

/// Sleeps until one of `readers`, or `also` (an eventfd, say), has
/// something to read, or `timeout` passes. Returns at once if a reader
/// already holds a message.
pub fn wait_any<'a>(
    readers: impl IntoIterator<Item = &'a BlockingReader>,
    also: std::os::fd::BorrowedFd<'_>,
    timeout: Duration,
) -> Result<(), RpcError> {
    sleep_until_readable(readers, Some(also), timeout)
}

fn sleep_until_readable<'a>(
    readers: impl IntoIterator<Item = &'a BlockingReader>,
    also: Option<std::os::fd::BorrowedFd<'_>>,
    timeout: Duration,
) -> Result<(), RpcError> {
    use rustix::event::{PollFd, PollFlags};
    let readers: Vec<&BlockingReader> = readers.into_iter().collect();
    if readers.iter().any(|r| r.has_buffered()) {
        return Ok(());
    }
    let mut fds: Vec<PollFd<'_>> = also.map(|fd| PollFd::from_borrowed_fd(fd, PollFlags::IN)).into_iter().collect();
    fds.extend(readers.iter().map(|r| PollFd::new(&r.stream, PollFlags::IN)));
    let rings: Vec<&RingInput> = readers.iter().filter_map(|r| r.ring.as_ref()).collect();
    // Announce the sleep, then look at the rings once more: a writer that
    // pushed before the announcement is seen here, one that pushes after it
    // sees the announcement and writes to the socket.
    for input in &rings {
        input.ring.set_sleeping(true);
    }
    std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    let result = if readers.iter().any(|r| r.ring_has_next()) {
        Ok(())
    } else {
        let timeout = rustix::event::Timespec::try_from(timeout)
            .unwrap_or(rustix::event::Timespec { tv_sec: i64::MAX as _, tv_nsec: 0 });
        match rustix::event::poll(&mut fds, Some(&timeout)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => Ok(()),
            Err(e) => Err(RpcError::Io(e.into())),
        }
    };
    for input in &rings {
        input.ring.set_sleeping(false);
        input.look.set(true);
    }
    result
}

impl std::os::fd::AsFd for BlockingReader {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::pair;
    use crate::SharedWriter;

    /// Polls `r` until a message arrives, sleeping on the socket between tries.
    fn recv<T: DeserializeOwned>(r: &mut BlockingReader) -> Result<T, RpcError> {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(m) = r.try_recv::<T>()? {
                return Ok(m);
            }
            assert!(std::time::Instant::now() < deadline, "no message within 30 s");
            r.wait(Duration::from_millis(100))?;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_detached_writer_sends_in_order_and_its_drop_ends_the_connection() {
        let (cr, cw, mut sr, _sw) = pair(1 << 20).await;
        let (_r, w) = detach(cr, cw).unwrap();
        let w = SharedWriter::start(w);
        for i in 0..100u32 {
            assert!(w.push(&(i, vec![i as u8; i as usize * 97])));
        }
        w.flush();
        for i in 0..100u32 {
            assert_eq!(sr.recv::<(u32, Vec<u8>)>().await.unwrap(), (i, vec![i as u8; i as usize * 97]));
        }
        drop(w);
        let end = tokio::time::timeout(Duration::from_secs(10), sr.recv::<u32>()).await;
        assert!(matches!(end, Ok(Err(RpcError::Closed))), "the peer must see the end while the reader lives");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_detached_reader_gets_every_message_whatever_the_frame_sizes_then_the_end() {
        let (cr, cw, _sr, mut sw) = pair(1 << 20).await;
        let (mut r, _w) = detach(cr, cw).unwrap();
        // Sizes from empty to several read chunks, flushed in uneven groups.
        let size = |i: u32| [0usize, 1, 300, 70_000, 5][i as usize % 5] * (1 + i as usize % 3);
        let reader = tokio::task::spawn_blocking(move || {
            for i in 0..500u32 {
                let (n, body) = recv::<(u32, Vec<u8>)>(&mut r).unwrap();
                assert_eq!((n, body.len()), (i, size(i)));
                assert!(body.iter().all(|&b| b == i as u8));
            }
            r
        });
        // A reader that fails stops reading, and the writes would then wait
        // for room forever: fail instead.
        let writing = async {
            for i in 0..500u32 {
                sw.push(&(i, vec![i as u8; size(i)])).unwrap();
                if i % 7 == 0 {
                    sw.write_out().await.unwrap();
                }
            }
            sw.send(&(u32::MAX, Vec::<u8>::new())).await.unwrap();
        };
        tokio::time::timeout(Duration::from_secs(60), writing).await.expect("the reader stopped reading");
        let mut r = reader.await.unwrap();
        drop(sw);
        assert_eq!(recv::<(u32, Vec<u8>)>(&mut r).unwrap().0, u32::MAX);
        assert!(matches!(recv::<u32>(&mut r), Err(RpcError::Closed)));
    }

    type Writer = Arc<SharedWriter>;

    /// A detached pair sharing a `cap`-byte ring: (client reader, client
    /// writer, server reader, server writer, the ring file). The writers
    /// stay in their `Arc`s: their flushers hold weak references.
    async fn ring_pair(cap: usize) -> (BlockingReader, Writer, BlockingReader, Writer, Arc<RingFile>) {
        let (cr, cw, sr, sw) = pair(1 << 20).await;
        let file = RingFile::create(cap).unwrap();
        let (cr, cw) = detach_with_ring(cr, cw, Some((file.clone(), Side::Executor))).unwrap();
        let (sr, sw) = detach_with_ring(sr, sw, Some((file.clone(), Side::Driver))).unwrap();
        (cr, SharedWriter::start(cw), sr, SharedWriter::start(sw), file)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn with_a_ring_small_frames_take_it_large_ones_the_socket_and_order_holds_to_the_end() {
        let (_cr, cw, mut sr, _sw, file) = ring_pair(4096).await;
        // Sizes below and above the ring's 4 KiB, flushed in uneven groups.
        let size = |i: u32| [0usize, 30, 5000, 700, 70_000][i as usize % 5] + i as usize % 3;
        let reader = tokio::task::spawn_blocking(move || {
            for i in 0..500u32 {
                let (n, body) = recv::<(u32, Vec<u8>)>(&mut sr).unwrap();
                assert_eq!((n, body.len()), (i, size(i)));
                assert!(body.iter().all(|&b| b == i as u8));
            }
            sr
        });
        let writer = tokio::task::spawn_blocking(move || {
            for i in 0..500u32 {
                assert!(cw.push(&(i, vec![i as u8; size(i)])));
                if i % 3 == 0 {
                    cw.flush();
                }
            }
            cw.flush();
            cw
        });
        let cw = writer.await.unwrap();
        let mut sr = reader.await.unwrap();
        assert!(file.bytes_written(Side::Executor) > 0, "small frames went through the ring");
        // Frames left in the ring when the socket ends still arrive first.
        for i in 0..20u32 {
            assert!(cw.push(&i));
        }
        cw.flush();
        drop(cw);
        for i in 0..20u32 {
            assert_eq!(recv::<u32>(&mut sr).unwrap(), i);
        }
        assert!(matches!(recv::<u32>(&mut sr), Err(RpcError::Closed)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_reader_asleep_on_the_socket_wakes_for_a_frame_put_in_the_ring() {
        let (_cr, cw, mut sr, _sw, file) = ring_pair(1 << 16).await;
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            assert!(sr.try_recv::<u32>().unwrap().is_none());
            tx.send(()).unwrap();
            let t0 = std::time::Instant::now();
            // Without the wake-up this sleeps its whole minute.
            sr.wait(Duration::from_secs(60)).unwrap();
            (t0.elapsed(), sr.try_recv::<u32>().unwrap())
        });
        rx.recv().unwrap();
        // Send only once the reader has announced its sleep.
        let probe = file.writer(Side::Executor);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !probe.reader_sleeping() {
            assert!(std::time::Instant::now() < deadline, "the reader never slept");
            std::thread::sleep(Duration::from_millis(1));
        }
        let (before, socket_before) = (file.bytes_written(Side::Executor), file.reader(Side::Driver).socket_writes());
        assert!(cw.send(&7u32));
        assert!(file.bytes_written(Side::Executor) > before, "the frame went through the ring");
        assert!(file.reader(Side::Driver).socket_writes() > socket_before, "and a wake-up through the socket");
        let (slept, got) = reader.join().unwrap();
        assert_eq!(got, Some(7));
        assert!(slept < Duration::from_secs(30), "woken after {slept:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_forged_or_misnumbered_ring_frame_ends_the_connection() {
        let (_cr, _cw, mut sr, _sw, file) = ring_pair(1 << 16).await;
        let mut forged = file.writer(Side::Executor);
        let mut frame = vec![0u8; 4 + TAG + 3];
        frame[..4].copy_from_slice(&((TAG + 3) as u32).to_be_bytes());
        assert!(forged.try_push(0, &frame));
        assert!(matches!(sr.try_recv::<u32>(), Err(RpcError::Auth(_))));

        let (_cr, _cw, mut sr, _sw, file) = ring_pair(1 << 16).await;
        let mut forged = file.writer(Side::Executor);
        frame[..4].copy_from_slice(&99u32.to_be_bytes());
        assert!(forged.try_push(0, &frame));
        assert!(matches!(sr.try_recv::<u32>(), Err(RpcError::Malformed(m)) if m.contains("length prefix")));

        // A number already taken: the reader neither waits for it nor spins.
        let (_cr, cw, mut sr, _sw, file) = ring_pair(1 << 16).await;
        assert!(cw.send(&1u32));
        assert_eq!(sr.try_recv::<u32>().unwrap(), Some(1));
        let mut forged = file.writer(Side::Executor);
        assert!(forged.try_push(0, &[0u8; 4 + TAG + 1]));
        assert!(sr.has_buffered(), "the damage is reported by the next read");
        assert!(matches!(sr.try_recv::<u32>(), Err(RpcError::Malformed(m)) if m.contains("numbered 0")));

        // A later number waits for the frame before it, asleep, not spinning.
        let (_cr, _cw, sr, _sw, file) = ring_pair(1 << 16).await;
        let mut forged = file.writer(Side::Executor);
        assert!(forged.try_push(5, &[0u8; 4 + TAG + 1]));
        assert!(!sr.has_buffered());
        let t0 = std::time::Instant::now();
        sr.wait(Duration::from_millis(300)).unwrap();
        assert!(t0.elapsed() >= Duration::from_millis(250), "slept on the socket");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_unix_socket_connection_detaches_and_carries_frames_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let secret = crate::Secret::generate();
        let s2 = secret.clone();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            crate::accept(stream, &s2, 1, 64 << 20).await.unwrap()
        });
        let address = format!("{}{}", crate::stream::UNIX_PREFIX, path.display());
        let stream = crate::Stream::connect(&address).await.unwrap();
        let (cr, cw) = crate::connect(stream, &secret, 1, 64 << 20).await.unwrap();
        let (mut sr, mut sw) = server.await.unwrap();
        let (mut r, w) = detach(cr, cw).unwrap();
        let w = SharedWriter::start(w);
        // More than the socket buffers hold, so the writer must wait for room.
        let big: Vec<u8> = (0..8u32 << 20).map(|i| (i % 253) as u8).collect();
        assert!(w.send(&big));
        assert!(w.send(&7u32));
        let wait = Duration::from_secs(30);
        assert!(tokio::time::timeout(wait, sr.recv::<Vec<u8>>()).await.unwrap().unwrap() == big);
        assert_eq!(tokio::time::timeout(wait, sr.recv::<u32>()).await.unwrap().unwrap(), 7);
        sw.send(&(1u32, "back".to_string())).await.unwrap();
        let got = tokio::task::spawn_blocking(move || recv::<(u32, String)>(&mut r).unwrap()).await.unwrap();
        assert_eq!(got, (1, "back".to_string()));
        drop(w);
        let end = tokio::time::timeout(wait, sr.recv::<u32>()).await;
        assert!(matches!(end, Ok(Err(RpcError::Closed))), "the peer sees the end");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn bytes_the_async_reader_had_buffered_are_read_first() {
        let (mut cr, cw, _sr, mut sw) = pair(1 << 20).await;
        // Two frames in one write: [1, 2] and [3].
        sw.push(&1u32).unwrap();
        sw.push(&2u32).unwrap();
        sw.seal();
        sw.push(&3u32).unwrap();
        sw.write_out().await.unwrap();
        assert_eq!(cr.recv::<u32>().await.unwrap(), 1);
        let (mut r, _w) = detach(cr, cw).unwrap();
        sw.send(&4u32).await.unwrap();
        let got = tokio::task::spawn_blocking(move || (0..3).map(|_| recv::<u32>(&mut r).unwrap()).collect::<Vec<_>>());
        assert_eq!(got.await.unwrap(), vec![2, 3, 4]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn an_oversized_frame_is_refused_before_it_is_read() {
        let (cr, cw, _sr, mut sw) = pair(1 << 20).await;
        let (mut r, _w) = detach(cr, cw).unwrap();
        sw.out.extend_from_slice(&(2u32 << 20).to_be_bytes());
        sw.write_out().await.unwrap();
        let err = tokio::task::spawn_blocking(move || recv::<u32>(&mut r).unwrap_err()).await.unwrap();
        assert!(matches!(&err, RpcError::Malformed(m) if m.contains("exceeds the limit")), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn what_a_full_socket_cannot_take_still_goes_out_in_order_after_detaching() {
        let (cr, cw, mut sr, _sw) = pair(64 << 20).await;
        let (_r, w) = detach(cr, cw).unwrap();
        let w = SharedWriter::start(w);
        // Nobody reads yet: far more than the socket buffers hold.
        let big: Vec<u8> = (0..16u32 << 20).map(|i| (i % 251) as u8).collect();
        assert!(w.send(&big));
        for i in 0..100u32 {
            assert!(w.send(&i));
        }
        let wait = Duration::from_secs(30);
        let got = tokio::time::timeout(wait, sr.recv::<Vec<u8>>()).await.expect("the backlog is written").unwrap();
        assert!(got == big);
        for i in 0..100u32 {
            assert_eq!(tokio::time::timeout(wait, sr.recv::<u32>()).await.unwrap().unwrap(), i);
        }
    }
}
