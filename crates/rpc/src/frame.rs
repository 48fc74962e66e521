//! Authenticated, encrypted framing.
//!
//! Every frame on the wire is `[u32 BE length][body]`; frames are read with
//! tokio-util's length-delimited codec, whose length check happens before
//! buffering.
//!
//! Handshake (each step one frame):
//! 1. client → server: `"EMBR" | protocol u32 LE | client_nonce[32]`
//! 2. server → client: `server_nonce[32] | HMAC(secret, "ember-server" | client_nonce | server_nonce)`
//! 3. client → server: `HMAC(secret, "ember-client" | server_nonce | client_nonce)`
//!
//! Both sides then use `session = HMAC(secret, "ember-session" | client_nonce | server_nonce)`
//! (HMAC-SHA256) as an AES-256-GCM key. Every later frame body is
//! `tag[16] | ciphertext`: the payload sealed under the nonce
//! `direction u8 | 0 0 0 | sequence u64 LE`, where the sequence counts
//! frames per direction from 0. So frames cannot be read, forged,
//! replayed, reordered, reflected or moved to another connection, and no
//! nonce repeats under a key: each connection's key comes from fresh random
//! nonces of both sides. Tags are checked (by `ring`, in constant time)
//! before a payload is decoded. A peer without the secret fails the
//! handshake; the secret itself never crosses the wire.
//!
//! AES-GCM rather than an HMAC tag over plaintext: with AES-NI and carry-less
//! multiplication it seals a 180-byte frame (a `LaunchTask` with its stage)
//! in 115 ns against HMAC-SHA256's 219 ns, and 1 MiB in 0.10 ms against
//! 0.52 ms, so encryption costs less than authentication alone did.
//!
//! A payload is one or more postcard-encoded messages back to back. The
//! [`pump`] packs every message already queued into one frame, so a burst
//! (the `LaunchTask`s of one offer round, the status updates of many short
//! tasks) costs one seal, one decode of the frame and one write, not one per
//! message. Frames are built in place — length, tag and messages in one
//! buffer — sealed in place and written with one call.

use futures_util::StreamExt;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{de::DeserializeOwned, Serialize};
use sha2::Sha256;
use tokio::io::AsyncWriteExt;
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};

use crate::stream::{AsyncWriteHalf, ReadHalf, StdStream, Stream};

type HmacSha256 = Hmac<Sha256>;
const MAGIC: &[u8; 4] = b"EMBR";
/// Bytes of a frame's authentication tag.
pub(crate) const TAG: usize = ring::aead::MAX_TAG_LEN;

#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("connection closed by peer")]
    Closed,
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("authentication failed: {0}")]
    Auth(String),
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("protocol version mismatch: peer speaks {peer}, we speak {ours}")]
    Version { peer: u32, ours: u32 },
}

/// The per-application secret. Its `Debug` never prints the bytes.
#[derive(Clone)]
pub struct Secret(pub [u8; 32]);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Secret {
    pub fn generate() -> Self {
        let mut b = [0u8; 32];
        rand::rng().fill_bytes(&mut b);
        Secret(b)
    }

    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn from_hex(s: &str) -> Option<Self> {
        let s = s.trim();
        if s.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
            out[i] = u8::from_str_radix(std::str::from_utf8(chunk).ok()?, 16).ok()?;
        }
        Some(Secret(out))
    }
}

fn mac(key: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        m.update(p);
    }
    m
}

fn tag(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    mac(key, parts).finalize().into_bytes().into()
}

fn verify(key: &[u8], parts: &[&[u8]], expected: &[u8]) -> bool {
    mac(key, parts).verify_slice(expected).is_ok()
}

/// A connection's frame cipher: AES-256-GCM under its session key, one
/// nonce per direction and sequence number (see the module docs).
#[derive(Clone)]
pub(crate) struct FrameKey(ring::aead::LessSafeKey);

impl FrameKey {
    pub(crate) fn new(session: &[u8; 32]) -> Self {
        let key = ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, session).expect("a 32-byte AES-256 key");
        FrameKey(ring::aead::LessSafeKey::new(key))
    }

    fn nonce(direction: u8, seq: u64) -> ring::aead::Nonce {
        let mut n = [0u8; ring::aead::NONCE_LEN];
        n[0] = direction;
        n[4..].copy_from_slice(&seq.to_le_bytes());
        ring::aead::Nonce::assume_unique_for_key(n)
    }

    /// Encrypts `payload` in place and returns its tag.
    pub(crate) fn seal(&self, direction: u8, seq: u64, payload: &mut [u8]) -> [u8; TAG] {
        let tag = self
            .0
            .seal_in_place_separate_tag(Self::nonce(direction, seq), ring::aead::Aad::empty(), payload)
            .expect("a frame within AES-GCM's length limit");
        tag.as_ref().try_into().expect("a 16-byte tag")
    }

    /// Checks `body` (`tag | ciphertext`) and decrypts its payload in place;
    /// the payload is then `body[TAG..]`.
    pub(crate) fn open(&self, direction: u8, seq: u64, body: &mut [u8]) -> Result<(), RpcError> {
        if body.len() < TAG {
            return Err(RpcError::Malformed(format!("frame of {} bytes is shorter than its tag", body.len())));
        }
        let (tag, payload) = body.split_at_mut(TAG);
        let tag = ring::aead::Tag::try_from(&*tag).expect("TAG bytes");
        self.0
            .open_in_place_separate_tag(Self::nonce(direction, seq), ring::aead::Aad::empty(), tag, payload, 0..)
            .map_err(|_| RpcError::Auth("frame authentication tag mismatch".into()))?;
        Ok(())
    }
}

pub(crate) type Reader = FramedRead<ReadHalf, LengthDelimitedCodec>;

/// Bytes before a frame's payload: the length prefix and the tag.
const HEADER: usize = 4 + TAG;
/// The pump stops packing messages into a write once it holds this much.
const BATCH_BYTES: usize = 1 << 20;
/// A write buffer grown past this by one large message is released after it.
const KEEP_CAPACITY: usize = 4 << 20;

/// The receiving half of an authenticated connection.
pub struct ConnReader {
    pub(crate) inner: Reader,
    pub(crate) key: FrameKey,
    pub(crate) direction: u8,
    pub(crate) seq: u64,
    /// What is left of the last frame's payload: messages not yet returned.
    pub(crate) pending: bytes::BytesMut,
}

/// The socket a [`ConnWriter`] writes to: tokio's half of a connection it
/// also reads, or — once [`crate::blocking::detach`] has moved reading to a
/// plain thread — the plain socket.
pub(crate) enum WriteHalf {
    Tokio(AsyncWriteHalf),
    WriteOnly(WriteOnly),
}

/// A detached connection's sending side: a plain non-blocking socket,
/// registered with tokio only while a writer waits for room in it. A socket
/// registered for writability all along has its waiters woken whenever the
/// peer reads — on a Unix socket after every message it reads — which woke
/// the I/O thread for nothing: local-cluster tiny jobs took 0.059–0.082 ms
/// over Unix sockets that way, against 0.037–0.045 ms over TCP.
pub(crate) struct WriteOnly(pub(crate) StdStream);

impl Drop for WriteOnly {
    fn drop(&mut self) {
        // As tokio's half does: the peer sees the sending side end even
        // while this process still holds the socket's reading side.
        let _ = self.0.shutdown_write();
    }
}

impl WriteHalf {
    pub(crate) fn try_write(&self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            WriteHalf::Tokio(h) => h.try_write(buf),
            WriteHalf::WriteOnly(w) => std::io::Write::write(&mut &w.0, buf),
        }
    }

    /// Waits until the socket may take more. Callers retry their write
    /// after it returns, and call it again only after that write found
    /// the socket full.
    pub(crate) async fn writable(&self) -> std::io::Result<()> {
        match self {
            WriteHalf::Tokio(h) => h.writable().await,
            WriteHalf::WriteOnly(w) => {
                // A registration reports the socket's state when it is
                // made, so room that appeared since the failed write is not
                // missed; it ends here. Must run on a tokio runtime (the
                // `SharedWriter`'s flusher task is the only caller).
                let borrowed = std::os::fd::AsFd::as_fd(&w.0);
                // SAFETY: the `AsyncFd` borrows the writer's descriptor, so
                // it stays open, and is not replaced, until the `AsyncFd` has
                // deregistered it at the end of this block.
                let fd = unsafe {
                    tokio::io::unix::AsyncFd::register_with_interest(borrowed, tokio::io::Interest::WRITABLE)
                }
                .map_err(std::io::Error::from)?;
                let _ready = fd.writable().await?;
                Ok(())
            }
        }
    }
}

/// The sending half of an authenticated connection.
pub struct ConnWriter {
    /// Shared so that a [`crate::SharedWriter`]'s flusher can wait for the
    /// socket to drain without holding the buffer's lock.
    pub(crate) inner: std::sync::Arc<WriteHalf>,
    pub(crate) key: FrameKey,
    pub(crate) direction: u8,
    pub(crate) seq: u64,
    pub(crate) max_frame: usize,
    /// Sealed frames followed by the frame being built, ready for one write.
    pub(crate) out: Vec<u8>,
    /// Where the frame being built starts in `out`, if one is open.
    pub(crate) open: Option<usize>,
    /// A shared-memory ring to the peer, taken before the socket when a
    /// frame fits ([`crate::ring`]).
    pub(crate) ring: Option<crate::ring::RingWriter>,
}

fn codec(max_frame: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder().max_frame_length(max_frame).new_codec()
}

async fn next_raw(r: &mut Reader) -> Result<bytes::BytesMut, RpcError> {
    match r.next().await {
        None => Err(RpcError::Closed),
        Some(Err(e)) if e.kind() == std::io::ErrorKind::InvalidData => Err(RpcError::Malformed(e.to_string())),
        Some(Err(e)) => Err(RpcError::Io(e)),
        Some(Ok(b)) => Ok(b),
    }
}

/// Writes one unauthenticated handshake frame.
async fn write_raw(w: &mut AsyncWriteHalf, body: &[u8]) -> Result<(), RpcError> {
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(body);
    w.write_all(&frame).await?;
    Ok(())
}

fn split(stream: Stream, max_frame: usize) -> (Reader, AsyncWriteHalf) {
    let (r, w) = stream.into_split();
    (FramedRead::new(r, codec(max_frame)), w)
}

fn halves(
    r: Reader,
    w: AsyncWriteHalf,
    key: [u8; 32],
    read_direction: u8,
    max_frame: usize,
) -> (ConnReader, ConnWriter) {
    let key = FrameKey::new(&key);
    (
        ConnReader { inner: r, key: key.clone(), direction: read_direction, seq: 0, pending: bytes::BytesMut::new() },
        ConnWriter {
            inner: std::sync::Arc::new(WriteHalf::Tokio(w)),
            key,
            direction: 1 - read_direction,
            seq: 0,
            max_frame,
            out: Vec::new(),
            open: None,
            ring: None,
        },
    )
}

/// Client side of the handshake.
pub async fn connect(
    stream: impl Into<Stream>,
    secret: &Secret,
    protocol: u32,
    max_frame: usize,
) -> Result<(ConnReader, ConnWriter), RpcError> {
    let (mut r, mut w) = split(stream.into(), max_frame);
    let mut client_nonce = [0u8; 32];
    rand::rng().fill_bytes(&mut client_nonce);
    let mut hello = Vec::with_capacity(40);
    hello.extend_from_slice(MAGIC);
    hello.extend_from_slice(&protocol.to_le_bytes());
    hello.extend_from_slice(&client_nonce);
    write_raw(&mut w, &hello).await?;
    let reply = next_raw(&mut r).await?;
    if reply.len() != 64 {
        return Err(RpcError::Auth("unexpected handshake reply".into()));
    }
    let (server_nonce, proof) = reply.split_at(32);
    if !verify(&secret.0, &[b"ember-server", &client_nonce, server_nonce], proof) {
        return Err(RpcError::Auth("the server does not know the application secret".into()));
    }
    let client_proof = tag(&secret.0, &[b"ember-client", server_nonce, &client_nonce]);
    write_raw(&mut w, &client_proof).await?;
    let key = tag(&secret.0, &[b"ember-session", &client_nonce, server_nonce]);
    Ok(halves(r, w, key, 1, max_frame))
}

/// Server side of the handshake.
pub async fn accept(
    stream: impl Into<Stream>,
    secret: &Secret,
    protocol: u32,
    max_frame: usize,
) -> Result<(ConnReader, ConnWriter), RpcError> {
    let (mut r, mut w) = split(stream.into(), max_frame);
    let hello = next_raw(&mut r).await?;
    if hello.len() != 40 || &hello[..4] != MAGIC {
        return Err(RpcError::Malformed("not an Ember connection".into()));
    }
    let peer = u32::from_le_bytes(hello[4..8].try_into().expect("4 bytes"));
    if peer != protocol {
        return Err(RpcError::Version { peer, ours: protocol });
    }
    let client_nonce = &hello[8..40];
    let mut server_nonce = [0u8; 32];
    rand::rng().fill_bytes(&mut server_nonce);
    let proof = tag(&secret.0, &[b"ember-server", client_nonce, &server_nonce]);
    let mut reply = Vec::with_capacity(64);
    reply.extend_from_slice(&server_nonce);
    reply.extend_from_slice(&proof);
    write_raw(&mut w, &reply).await?;
    let client_proof = next_raw(&mut r).await?;
    if !verify(&secret.0, &[b"ember-client", &server_nonce, client_nonce], &client_proof) {
        return Err(RpcError::Auth("the peer does not know the application secret".into()));
    }
    let key = tag(&secret.0, &[b"ember-session", client_nonce, &server_nonce]);
    Ok(halves(r, w, key, 0, max_frame))
}

/// A postcard output that appends to a buffer it borrows, so a failed
/// encoding leaves the frames already in the buffer intact.
struct Append<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for Append<'_> {
    type Output = ();

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

impl ConnWriter {
    /// Appends one message to the frame being built, sealing that frame
    /// first if the message would take it over the frame limit. On error the
    /// buffer holds exactly what it held before.
    pub(crate) fn push<T: Serialize>(&mut self, msg: &T) -> Result<(), RpcError> {
        let fresh = self.open.is_none();
        if fresh {
            self.open_frame();
        }
        let start = self.open.expect("a frame is open");
        let at = self.out.len();
        if let Err(e) = self.encode(msg) {
            self.undo(fresh, start);
            return Err(e);
        }
        if self.out.len() - start - 4 <= self.max_frame {
            return Ok(());
        }
        let size = self.out.len() - at;
        if size + TAG <= self.max_frame {
            // Fits alone: seal what came before and move the message to a frame of its own.
            let message = self.out.split_off(at);
            self.seal();
            self.open_frame();
            self.out.extend_from_slice(&message);
            return Ok(());
        }
        self.out.truncate(at);
        self.undo(fresh, start);
        Err(RpcError::Malformed(format!(
            "a message of {size} bytes exceeds the frame limit of {} bytes (ember.rpc.maxFrameSize)",
            self.max_frame
        )))
    }

    /// Drops the frame `push` opened if it holds no message.
    fn undo(&mut self, fresh: bool, start: usize) {
        if fresh {
            self.out.truncate(start);
            self.open = None;
        }
    }

    fn open_frame(&mut self) {
        self.open = Some(self.out.len());
        self.out.resize(self.out.len() + HEADER, 0);
    }

    fn encode<T: Serialize>(&mut self, msg: &T) -> Result<(), RpcError> {
        let at = self.out.len();
        postcard::serialize_with_flavor(msg, Append(&mut self.out)).map_err(|e| {
            self.out.truncate(at);
            RpcError::Malformed(format!("encoding: {e}"))
        })
    }

    /// Encrypts the open frame's messages and fills in its length and tag.
    pub(crate) fn seal(&mut self) {
        let Some(start) = self.open.take() else { return };
        let body = (self.out.len() - start - 4) as u32;
        let t = self.key.seal(self.direction, self.seq, &mut self.out[start + HEADER..]);
        self.seq += 1;
        self.out[start..start + 4].copy_from_slice(&body.to_be_bytes());
        self.out[start + 4..start + HEADER].copy_from_slice(&t);
    }

    /// Seals the open frame and writes everything buffered.
    pub(crate) async fn write_out(&mut self) -> Result<(), RpcError> {
        self.seal();
        let mut sent = 0;
        let result = loop {
            match self.write_from(&mut sent) {
                Ok(true) => break Ok(()),
                Ok(false) => {
                    if let Err(e) = self.inner.writable().await {
                        break Err(e);
                    }
                }
                Err(e) => break Err(e),
            }
        };
        self.clear_out();
        Ok(result?)
    }

    /// Writes the buffer from byte `*sent` without blocking, advancing
    /// `*sent`; true once everything is written, false when the socket
    /// takes no more for now.
    pub(crate) fn write_from(&self, sent: &mut usize) -> std::io::Result<bool> {
        while *sent < self.out.len() {
            match self.inner.try_write(&self.out[*sent..]) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    *sent += n;
                    if let Some(ring) = &self.ring {
                        ring.note_socket_write();
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Moves the sealed frames at the front of the buffer into the ring, as
    /// many as fit, and returns the bytes they took; the rest go to the
    /// socket. Call only when nothing of the buffer was written yet. A
    /// reader asleep on the socket gets an empty frame after them.
    pub(crate) fn push_to_ring(&mut self) -> usize {
        let Some(ring) = self.ring.as_mut() else { return 0 };
        debug_assert!(self.open.is_none(), "frames are sealed first");
        let frame_at =
            |out: &[u8], at: usize| 4 + u32::from_be_bytes(out[at..at + 4].try_into().expect("4 bytes")) as usize;
        let mut frames = 0u64;
        let mut at = 0;
        while at < self.out.len() {
            at += frame_at(&self.out, at);
            frames += 1;
        }
        let mut seq = self.seq - frames;
        at = 0;
        while at < self.out.len() {
            let len = frame_at(&self.out, at);
            if !ring.try_push(seq, &self.out[at..at + len]) {
                break;
            }
            at += len;
            seq += 1;
        }
        if at > 0 && ring.reader_sleeping() {
            self.open_frame();
            self.seal();
        }
        at
    }

    /// Empties the write buffer, releasing it if one large message grew it.
    pub(crate) fn clear_out(&mut self) {
        self.out.clear();
        if self.out.capacity() > KEEP_CAPACITY {
            self.out = Vec::new();
        }
    }

    /// Sends one message in a frame of its own and writes it out.
    pub async fn send<T: Serialize>(&mut self, msg: &T) -> Result<(), RpcError> {
        if let Err(e) = self.push(msg) {
            // Earlier messages already in the buffer still go out.
            self.write_out().await?;
            return Err(e);
        }
        self.write_out().await
    }
}

/// Writes everything sent on `rx` to the connection until either side ends.
/// Messages already queued go out together — packed into frames of up to
/// the frame limit, about 1 MiB (`BATCH_BYTES`) per write — so a burst costs one
/// tag and one write instead of one per message. A message that cannot be
/// encoded or exceeds the frame limit ends the connection, as a write
/// failure would: the peer sees it close, never a silently missing message.
pub async fn pump<T: Serialize>(mut writer: ConnWriter, mut rx: tokio::sync::mpsc::UnboundedReceiver<T>) {
    while let Some(first) = rx.recv().await {
        let mut message = Some(first);
        while let Some(m) = message.take() {
            if let Err(e) = writer.push(&m) {
                tracing::error!(error = %e, "cannot send a message; closing the connection");
                let _ = writer.write_out().await;
                return;
            }
            if writer.out.len() < BATCH_BYTES {
                message = rx.try_recv().ok();
            }
        }
        if writer.write_out().await.is_err() {
            return;
        }
    }
}

impl ConnReader {
    /// The next message: from the current frame while it has any, else from
    /// the next frame, whose tag is checked first.
    pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<T, RpcError> {
        if self.pending.is_empty() {
            let mut frame = next_raw(&mut self.inner).await?;
            self.key.open(self.direction, self.seq, &mut frame)?;
            self.seq += 1;
            let _ = frame.split_to(TAG);
            if frame.is_empty() {
                return Err(RpcError::Malformed("a frame without messages".into()));
            }
            self.pending = frame;
        }
        let (msg, rest) =
            postcard::take_from_bytes::<T>(&self.pending).map_err(|e| RpcError::Malformed(format!("decoding: {e}")))?;
        let used = self.pending.len() - rest.len();
        let _ = self.pending.split_to(used);
        Ok(msg)
    }
}

/// An authenticated connection over loopback, for tests: (client reader,
/// client writer, server reader, server writer).
#[cfg(test)]
pub(crate) async fn pair(max_frame: usize) -> (ConnReader, ConnWriter, ConnReader, ConnWriter) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let secret = Secret::generate();
    let s2 = secret.clone();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        accept(stream, &s2, 1, max_frame).await.unwrap()
    });
    let (cr, cw) = connect(tokio::net::TcpStream::connect(addr).await.unwrap(), &secret, 1, max_frame).await.unwrap();
    let (sr, sw) = server.await.unwrap();
    (cr, cw, sr, sw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn secrets_round_trip_and_never_print() {
        let s = Secret::generate();
        assert_eq!(Secret::from_hex(&s.to_hex()).unwrap().0, s.0);
        assert!(!format!("{s:?}").contains(&s.to_hex()[..8]));
        assert!(Secret::from_hex("zz").is_none());
    }

    #[tokio::test]
    async fn a_queued_burst_travels_in_few_frames_and_arrives_whole_and_in_order() {
        let (_cr, cw, mut sr, _sw) = pair(1 << 20).await;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<(u32, Vec<u8>)>();
        // Queued before the pump starts, so it finds them all at once.
        for i in 0..1000u32 {
            tx.send((i, vec![i as u8; (i % 7) as usize * 100])).unwrap();
        }
        drop(tx);
        pump(cw, rx).await;
        for i in 0..1000u32 {
            let (n, body) = sr.recv::<(u32, Vec<u8>)>().await.unwrap();
            assert_eq!((n, body.len()), (i, (i % 7) as usize * 100));
            assert!(body.iter().all(|&b| b == i as u8));
        }
        assert!(sr.seq < 10, "1000 queued messages took {} frames", sr.seq);
        assert!(matches!(sr.recv::<(u32, Vec<u8>)>().await, Err(RpcError::Closed)));
    }

    #[tokio::test]
    async fn messages_that_cannot_share_a_frame_get_their_own_and_oversized_ones_are_refused() {
        let max = 10_000;
        let (_cr, mut cw, mut sr, _sw) = pair(max).await;
        // Two 6 KB messages cannot share a 10 KB frame; both still arrive.
        cw.push(&vec![1u8; 6000]).unwrap();
        cw.push(&vec![2u8; 6000]).unwrap();
        let err = cw.push(&vec![3u8; max]).unwrap_err();
        assert!(err.to_string().contains("exceeds the frame limit"), "{err}");
        cw.push(&vec![4u8; 10]).unwrap();
        cw.write_out().await.unwrap();
        for (byte, len) in [(1u8, 6000usize), (2, 6000), (4, 10)] {
            let v = sr.recv::<Vec<u8>>().await.unwrap();
            assert_eq!((v[0], v.len()), (byte, len));
        }
        assert_eq!(sr.seq, 2, "the third and fourth message shared the second frame");
    }

    #[tokio::test]
    async fn an_authentic_frame_without_messages_is_malformed() {
        let (_cr, mut cw, mut sr, _sw) = pair(1 << 20).await;
        cw.open_frame();
        cw.write_out().await.unwrap();
        assert!(matches!(sr.recv::<u32>().await, Err(RpcError::Malformed(m)) if m.contains("without messages")));
    }

    #[tokio::test]
    async fn a_frame_whose_messages_do_not_decode_is_malformed() {
        let (_cr, mut cw, mut sr, _sw) = pair(1 << 20).await;
        cw.push(&1u32).unwrap();
        cw.out.push(0xff); // a truncated varint after a good message
        cw.write_out().await.unwrap();
        assert_eq!(sr.recv::<u32>().await.unwrap(), 1);
        assert!(matches!(sr.recv::<u32>().await, Err(RpcError::Malformed(m)) if m.contains("decoding")));
    }

    #[tokio::test]
    async fn frames_cross_the_wire_encrypted() {
        let (_cr, mut cw, mut sr, _sw) = pair(1 << 20).await;
        let secret_words = "the quick brown fox jumps over the lazy dog".to_string();
        cw.push(&secret_words).unwrap();
        cw.seal();
        let marker = &secret_words.as_bytes()[..16];
        assert!(!cw.out.windows(marker.len()).any(|w| w == marker), "plaintext on the wire");
        cw.write_out().await.unwrap();
        assert_eq!(sr.recv::<String>().await.unwrap(), secret_words);
    }

    /// `tag | ciphertext` of `payload` as frame `seq` in `direction`.
    fn sealed(key: &FrameKey, direction: u8, seq: u64, payload: &[u8]) -> Vec<u8> {
        let mut body = payload.to_vec();
        let tag = key.seal(direction, seq, &mut body);
        [&tag[..], &body].concat()
    }

    proptest! {
        #[test]
        fn arbitrary_frames_never_panic_and_never_authenticate(frame in proptest::collection::vec(any::<u8>(), 0..200), seq in any::<u64>()) {
            let key = FrameKey::new(&[7u8; 32]);
            prop_assert!(key.open(0, seq, &mut frame.clone()).is_err());
        }

        #[test]
        fn a_tampered_frame_is_rejected(payload in proptest::collection::vec(any::<u8>(), 0..100), flip in any::<prop::sample::Index>()) {
            let key = FrameKey::new(&[9u8; 32]);
            let frame = sealed(&key, 0, 5, &payload);
            let mut good = frame.clone();
            prop_assert!(key.open(0, 5, &mut good).is_ok());
            prop_assert_eq!(&good[TAG..], &payload[..]);
            prop_assert!(key.open(0, 6, &mut frame.clone()).is_err(), "wrong sequence");
            prop_assert!(key.open(1, 5, &mut frame.clone()).is_err(), "reflected");
            prop_assert!(FrameKey::new(&[8u8; 32]).open(0, 5, &mut frame.clone()).is_err(), "another connection");
            let mut bad = frame.clone();
            let i = flip.index(bad.len());
            bad[i] ^= 1;
            prop_assert!(key.open(0, 5, &mut bad).is_err());
        }
    }
}
