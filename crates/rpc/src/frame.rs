//! Authenticated framing.
//!
//! Every frame on the wire is `[u32 BE length][body]` (tokio-util's
//! length-delimited codec, whose length check happens before buffering).
//!
//! Handshake (each step one frame):
//! 1. client → server: `"EMBR" | protocol u32 LE | client_nonce[32]`
//! 2. server → client: `server_nonce[32] | HMAC(secret, "ember-server" | client_nonce | server_nonce)`
//! 3. client → server: `HMAC(secret, "ember-client" | server_nonce | client_nonce)`
//!
//! Both sides then use `session = HMAC(secret, "ember-session" | client_nonce | server_nonce)`.
//! Every later frame body is `tag[32] | payload`, with
//! `tag = HMAC(session, direction u8 | sequence u64 LE | payload)`; the
//! sequence counts frames per direction from 0, so frames cannot be replayed,
//! reordered, reflected, or moved to another connection. Tags are checked
//! (in constant time) before a payload is decoded. A peer without the secret
//! fails the handshake; the secret itself never crosses the wire.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{de::DeserializeOwned, Serialize};
use sha2::Sha256;
use tokio::net::TcpStream;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

type HmacSha256 = Hmac<Sha256>;
const MAGIC: &[u8; 4] = b"EMBR";
const TAG: usize = 32;

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

type Reader = FramedRead<tokio::net::tcp::OwnedReadHalf, LengthDelimitedCodec>;
type Writer = FramedWrite<tokio::net::tcp::OwnedWriteHalf, LengthDelimitedCodec>;

/// The receiving half of an authenticated connection.
pub struct ConnReader {
    inner: Reader,
    key: [u8; 32],
    direction: u8,
    seq: u64,
}

/// The sending half of an authenticated connection.
pub struct ConnWriter {
    inner: Writer,
    key: [u8; 32],
    direction: u8,
    seq: u64,
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

fn split(stream: TcpStream, max_frame: usize) -> (Reader, Writer) {
    let _ = stream.set_nodelay(true);
    let (r, w) = stream.into_split();
    (FramedRead::new(r, codec(max_frame)), FramedWrite::new(w, codec(max_frame)))
}

/// Client side of the handshake.
pub async fn connect(
    stream: TcpStream,
    secret: &Secret,
    protocol: u32,
    max_frame: usize,
) -> Result<(ConnReader, ConnWriter), RpcError> {
    let (mut r, mut w) = split(stream, max_frame);
    let mut client_nonce = [0u8; 32];
    rand::rng().fill_bytes(&mut client_nonce);
    let mut hello = Vec::with_capacity(40);
    hello.extend_from_slice(MAGIC);
    hello.extend_from_slice(&protocol.to_le_bytes());
    hello.extend_from_slice(&client_nonce);
    w.send(Bytes::from(hello)).await?;
    let reply = next_raw(&mut r).await?;
    if reply.len() != 64 {
        return Err(RpcError::Auth("unexpected handshake reply".into()));
    }
    let (server_nonce, proof) = reply.split_at(32);
    if !verify(&secret.0, &[b"ember-server", &client_nonce, server_nonce], proof) {
        return Err(RpcError::Auth("the server does not know the application secret".into()));
    }
    let client_proof = tag(&secret.0, &[b"ember-client", server_nonce, &client_nonce]);
    w.send(Bytes::copy_from_slice(&client_proof)).await?;
    let key = tag(&secret.0, &[b"ember-session", &client_nonce, server_nonce]);
    Ok((ConnReader { inner: r, key, direction: 1, seq: 0 }, ConnWriter { inner: w, key, direction: 0, seq: 0 }))
}

/// Server side of the handshake.
pub async fn accept(
    stream: TcpStream,
    secret: &Secret,
    protocol: u32,
    max_frame: usize,
) -> Result<(ConnReader, ConnWriter), RpcError> {
    let (mut r, mut w) = split(stream, max_frame);
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
    w.send(Bytes::from(reply)).await?;
    let client_proof = next_raw(&mut r).await?;
    if !verify(&secret.0, &[b"ember-client", &server_nonce, client_nonce], &client_proof) {
        return Err(RpcError::Auth("the peer does not know the application secret".into()));
    }
    let key = tag(&secret.0, &[b"ember-session", client_nonce, &server_nonce]);
    Ok((ConnReader { inner: r, key, direction: 0, seq: 0 }, ConnWriter { inner: w, key, direction: 1, seq: 0 }))
}

impl ConnWriter {
    fn seal<T: Serialize>(&mut self, msg: &T) -> Result<Bytes, RpcError> {
        let payload = postcard::to_allocvec(msg).map_err(|e| RpcError::Malformed(format!("encoding: {e}")))?;
        let t = tag(&self.key, &[&[self.direction], &self.seq.to_le_bytes(), &payload]);
        self.seq += 1;
        let mut body = Vec::with_capacity(TAG + payload.len());
        body.extend_from_slice(&t);
        body.extend_from_slice(&payload);
        Ok(Bytes::from(body))
    }

    /// Sends one message and flushes it.
    pub async fn send<T: Serialize>(&mut self, msg: &T) -> Result<(), RpcError> {
        let frame = self.seal(msg)?;
        self.inner.send(frame).await?;
        Ok(())
    }

    /// Queues one message without flushing (see [`pump`]).
    pub async fn feed<T: Serialize>(&mut self, msg: &T) -> Result<(), RpcError> {
        let frame = self.seal(msg)?;
        self.inner.feed(frame).await?;
        Ok(())
    }

    pub async fn flush(&mut self) -> Result<(), RpcError> {
        SinkExt::<Bytes>::flush(&mut self.inner).await?;
        Ok(())
    }
}

/// Writes everything sent on `rx` to the connection until either side ends.
/// Messages already queued are written together and flushed once, so a burst
/// (many `LaunchTask`s after one offer round, many status updates) costs one
/// write instead of one per message.
pub async fn pump<T: Serialize>(mut writer: ConnWriter, mut rx: tokio::sync::mpsc::UnboundedReceiver<T>) {
    while let Some(first) = rx.recv().await {
        if writer.feed(&first).await.is_err() {
            return;
        }
        while let Ok(next) = rx.try_recv() {
            if writer.feed(&next).await.is_err() {
                return;
            }
        }
        if writer.flush().await.is_err() {
            return;
        }
    }
}

impl ConnReader {
    pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<T, RpcError> {
        let frame = next_raw(&mut self.inner).await?;
        open_frame(&self.key, self.direction, self.seq, &frame).and_then(|payload| {
            self.seq += 1;
            postcard::from_bytes(payload).map_err(|e| RpcError::Malformed(format!("decoding: {e}")))
        })
    }
}

/// Checks a frame's tag and returns its payload.
pub fn open_frame<'a>(key: &[u8; 32], direction: u8, seq: u64, frame: &'a [u8]) -> Result<&'a [u8], RpcError> {
    if frame.len() < TAG {
        return Err(RpcError::Malformed(format!("frame of {} bytes is shorter than its tag", frame.len())));
    }
    let (t, payload) = frame.split_at(TAG);
    if !verify(key, &[&[direction], &seq.to_le_bytes(), payload], t) {
        return Err(RpcError::Auth("frame authentication tag mismatch".into()));
    }
    Ok(payload)
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

    proptest! {
        #[test]
        fn arbitrary_frames_never_panic_and_never_authenticate(frame in proptest::collection::vec(any::<u8>(), 0..200), seq in any::<u64>()) {
            let key = [7u8; 32];
            prop_assert!(open_frame(&key, 0, seq, &frame).is_err());
        }

        #[test]
        fn a_tampered_frame_is_rejected(payload in proptest::collection::vec(any::<u8>(), 0..100), flip in any::<prop::sample::Index>()) {
            let key = [9u8; 32];
            let t = tag(&key, &[&[0], &5u64.to_le_bytes(), &payload]);
            let mut frame = t.to_vec();
            frame.extend_from_slice(&payload);
            prop_assert_eq!(open_frame(&key, 0, 5, &frame).unwrap(), &payload[..]);
            prop_assert!(open_frame(&key, 0, 6, &frame).is_err(), "wrong sequence");
            prop_assert!(open_frame(&key, 1, 5, &frame).is_err(), "reflected");
            let i = flip.index(frame.len());
            frame[i] ^= 1;
            prop_assert!(open_frame(&key, 0, 5, &frame).is_err());
        }
    }
}
