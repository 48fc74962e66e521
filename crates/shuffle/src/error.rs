//! Error type of the shuffle crate.
//!
//! Everything that can go wrong while writing or reading shuffle data is one
//! [`Error`] variant. Data corruption is always reported as
//! [`Error::Corrupt`] (never a panic, never silently wrong records), so the
//! engine can tell "this map output is bad, recompute it" apart from local
//! I/O failures and from errors raised by the caller's own record iterator.

use std::convert::Infallible;
use std::io;

/// Errors raised by the shuffle writers, readers and file formats.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O operation failed; `context` says what was being done and on which file.
    #[error("I/O error while {context}: {source}")]
    Io {
        /// What was being done (and on which path).
        context: String,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// Shuffle data failed validation (checksum, framing, codec, decoding, index).
    #[error("corrupt shuffle data: {what}")]
    Corrupt {
        /// What failed and where (file, partition, block offset).
        what: String,
    },
    /// A record could not be serialized (or is not representable in the format).
    #[error("serialization error: {0}")]
    Serialization(String),
    /// The caller passed inconsistent arguments (e.g. a partition id out of range).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// An error produced by the caller's record iterator, passed through unchanged.
    #[error("upstream error: {0}")]
    Upstream(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
}

/// Result alias used throughout the crate.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Builds an [`Error::Io`] with a context message.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }

    /// Builds an [`Error::Corrupt`].
    pub fn corrupt(what: impl Into<String>) -> Self {
        Error::Corrupt { what: what.into() }
    }

    /// Wraps any error of the caller (e.g. from an upstream iterator) as [`Error::Upstream`].
    pub fn upstream(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::Upstream(Box::new(err))
    }

    /// True if this error means the shuffle data itself is damaged.
    pub fn is_corrupt(&self) -> bool {
        matches!(self, Error::Corrupt { .. })
    }
}

impl From<Infallible> for Error {
    fn from(e: Infallible) -> Self {
        match e {}
    }
}

/// Returns a closure mapping an `io::Error` to [`Error::Io`] with the given context.
pub(crate) fn io_ctx<C: Into<String>>(context: C) -> impl FnOnce(io::Error) -> Error {
    move |source| Error::Io { context: context.into(), source }
}
