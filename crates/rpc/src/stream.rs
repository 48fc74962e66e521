//! The sockets connections run over: TCP, or a Unix domain socket between
//! processes of one host.
//!
//! A driver and the executor processes it starts on its own host
//! (`local-cluster`) talk over a Unix socket: on the 2-vCPU machines Ember is
//! measured on, a loopback TCP send costs several microseconds of the
//! sender's time (the receive path runs in its context), and a round trip
//! from the driver to two executors and back took 15–17 µs over TCP against
//! 8 µs over Unix sockets. Frames, tags and the handshake are the same on
//! both.
//!
//! An address names its kind: `unix:/path/to/socket`, or `host:port` for TCP.

use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The prefix of Unix socket addresses.
pub const UNIX_PREFIX: &str = "unix:";

/// A connected socket, before the handshake.
#[derive(Debug)]
pub enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

impl From<tokio::net::TcpStream> for Stream {
    fn from(s: tokio::net::TcpStream) -> Self {
        Stream::Tcp(s)
    }
}

impl From<tokio::net::UnixStream> for Stream {
    fn from(s: tokio::net::UnixStream) -> Self {
        Stream::Unix(s)
    }
}

impl Stream {
    /// Connects to `unix:PATH` or to a TCP `host:port`.
    pub async fn connect(address: &str) -> std::io::Result<Stream> {
        match address.strip_prefix(UNIX_PREFIX) {
            Some(path) => Ok(Stream::Unix(tokio::net::UnixStream::connect(path).await?)),
            None => Ok(Stream::Tcp(tokio::net::TcpStream::connect(address).await?)),
        }
    }

    /// Splits into owned halves; TCP sockets get `TCP_NODELAY` (frames are
    /// written whole, and a short one must not wait for an ack).
    pub(crate) fn into_split(self) -> (ReadHalf, AsyncWriteHalf) {
        match self {
            Stream::Tcp(s) => {
                let _ = s.set_nodelay(true);
                let (r, w) = s.into_split();
                (ReadHalf::Tcp(r), AsyncWriteHalf::Tcp(w))
            }
            Stream::Unix(s) => {
                let (r, w) = s.into_split();
                (ReadHalf::Unix(r), AsyncWriteHalf::Unix(w))
            }
        }
    }
}

/// The reading half of a [`Stream`] on the tokio reactor.
#[derive(Debug)]
pub(crate) enum ReadHalf {
    Tcp(tokio::net::tcp::OwnedReadHalf),
    Unix(tokio::net::unix::OwnedReadHalf),
}

impl AsyncRead for ReadHalf {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ReadHalf::Tcp(r) => Pin::new(r).poll_read(cx, buf),
            ReadHalf::Unix(r) => Pin::new(r).poll_read(cx, buf),
        }
    }
}

/// The writing half of a [`Stream`] on the tokio reactor.
#[derive(Debug)]
pub(crate) enum AsyncWriteHalf {
    Tcp(tokio::net::tcp::OwnedWriteHalf),
    Unix(tokio::net::unix::OwnedWriteHalf),
}

impl AsyncWriteHalf {
    pub(crate) fn try_write(&self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            AsyncWriteHalf::Tcp(w) => w.try_write(buf),
            AsyncWriteHalf::Unix(w) => w.try_write(buf),
        }
    }

    pub(crate) async fn writable(&self) -> std::io::Result<()> {
        match self {
            AsyncWriteHalf::Tcp(w) => w.writable().await,
            AsyncWriteHalf::Unix(w) => w.writable().await,
        }
    }
}

impl AsyncWrite for AsyncWriteHalf {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            AsyncWriteHalf::Tcp(w) => Pin::new(w).poll_write(cx, buf),
            AsyncWriteHalf::Unix(w) => Pin::new(w).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            AsyncWriteHalf::Tcp(w) => Pin::new(w).poll_flush(cx),
            AsyncWriteHalf::Unix(w) => Pin::new(w).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            AsyncWriteHalf::Tcp(w) => Pin::new(w).poll_shutdown(cx),
            AsyncWriteHalf::Unix(w) => Pin::new(w).poll_shutdown(cx),
        }
    }
}

/// Puts the halves of one connection back together as a plain
/// (non-tokio) socket.
pub(crate) fn reunite(r: ReadHalf, w: AsyncWriteHalf) -> std::io::Result<StdStream> {
    let mismatch = || std::io::Error::other("the halves belong to different connections");
    match (r, w) {
        (ReadHalf::Tcp(r), AsyncWriteHalf::Tcp(w)) => {
            Ok(StdStream::Tcp(r.reunite(w).map_err(|_| mismatch())?.into_std()?))
        }
        (ReadHalf::Unix(r), AsyncWriteHalf::Unix(w)) => {
            Ok(StdStream::Unix(r.reunite(w).map_err(|_| mismatch())?.into_std()?))
        }
        _ => Err(mismatch()),
    }
}

/// A connected socket outside tokio, read and written with plain calls.
#[derive(Debug)]
pub(crate) enum StdStream {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
}

impl StdStream {
    pub(crate) fn set_nonblocking(&self, on: bool) -> std::io::Result<()> {
        match self {
            StdStream::Tcp(s) => s.set_nonblocking(on),
            StdStream::Unix(s) => s.set_nonblocking(on),
        }
    }

    pub(crate) fn try_clone(&self) -> std::io::Result<StdStream> {
        Ok(match self {
            StdStream::Tcp(s) => StdStream::Tcp(s.try_clone()?),
            StdStream::Unix(s) => StdStream::Unix(s.try_clone()?),
        })
    }

    /// Ends the sending direction: the peer reads end-of-stream.
    pub(crate) fn shutdown_write(&self) -> std::io::Result<()> {
        match self {
            StdStream::Tcp(s) => s.shutdown(std::net::Shutdown::Write),
            StdStream::Unix(s) => s.shutdown(std::net::Shutdown::Write),
        }
    }
}

impl Read for &StdStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match *self {
            StdStream::Tcp(ref s) => (&mut &*s).read(buf),
            StdStream::Unix(ref s) => (&mut &*s).read(buf),
        }
    }
}

impl Write for &StdStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match *self {
            StdStream::Tcp(ref s) => (&mut &*s).write(buf),
            StdStream::Unix(ref s) => (&mut &*s).write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl AsFd for StdStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            StdStream::Tcp(s) => s.as_fd(),
            StdStream::Unix(s) => s.as_fd(),
        }
    }
}
