//! The on-disk (and on-the-wire) layout of shuffle data, and the code that
//! writes and validates it.
//!
//! This module owns every byte of the format so that writers, spill files,
//! readers and (later) the network layer agree on it. All integers are little
//! endian. Format version: [`FORMAT_VERSION`] = 2.
//!
//! # Map output file
//!
//! One file per map task: a *data region* followed by an *index trailer*.
//! (Spark writes the two as separate `.data` and `.index` files; one file
//! halves the files a shuffle creates, opens and deletes, which on file
//! systems that scan recently freed inodes at every creation — ext4 without a
//! journal — was a tenth of an iterative job's time.)
//!
//! The data region is the concatenation, for reduce partitions
//! `0..num_partitions` in order, of one *segment* per partition. A segment is
//! a (possibly empty) sequence of *blocks*, so a segment is self-contained and
//! can be shipped as an opaque byte slice; the concatenation of segments is
//! again a valid segment. Each block is:
//!
//! | offset | size | field                                                   |
//! |--------|------|---------------------------------------------------------|
//! | 0      | 4    | `uncompressed_len` (u32): length of the record bytes    |
//! | 4      | 4    | `stored_len` (u32): length of the stored bytes below    |
//! | 8      | 4    | `crc32` (u32, IEEE, `crc32fast`) of the stored bytes    |
//! | 12     | 1    | `codec`: 0 = raw, 1 = LZ4 block format (`lz4_flex`)     |
//! | 13     | `stored_len` | stored bytes                                    |
//!
//! Invariants (checked by the reader, produced by [`BlockWriter`]):
//! `1 <= uncompressed_len <= MAX_BLOCK_LEN`, `stored_len <= MAX_BLOCK_LEN`; for
//! codec 0 `stored_len == uncompressed_len`; for codec 1
//! `stored_len < uncompressed_len` (the writer only keeps LZ4 output that is
//! strictly smaller, otherwise it stores the block raw).
//!
//! The uncompressed bytes of a block are whole records concatenated; a record
//! is the postcard encoding of the tuple `(K, V)` (no length prefix: postcard
//! is self-delimiting). Records never span blocks. A record must encode to at
//! least one byte (zero-sized `(K, V)` types are rejected by the writer).
//!
//! # Index trailer
//!
//! The last [`trailer_len`]`(n)` bytes of the file; it is read from the end,
//! so its fixed part comes last:
//!
//! | offset from trailer start | size        | field                                  |
//! |---------------------------|-------------|----------------------------------------|
//! | 0                         | 8 * (n + 1) | offsets (u64) into the data region     |
//! | 8 * (n + 1)               | 4           | version (u32) = [`FORMAT_VERSION`]     |
//! | 8 * (n + 1) + 4           | 4           | `num_partitions` (u32) = n             |
//! | 8 * (n + 1) + 8           | 4           | crc32 of the trailer bytes before it   |
//! | 8 * (n + 1) + 12          | 4           | magic `b"EMSI"` ([`INDEX_MAGIC`])       |
//!
//! `offsets[0] == 0`, offsets are non-decreasing, partition `r`'s segment is
//! `data[offsets[r]..offsets[r + 1]]`, and `offsets[n]` is the data region's
//! length, so the file is `offsets[n] + trailer_len(n)` bytes long.
//!
//! # Integrity
//!
//! Every block's crc is verified before the block is decompressed or decoded;
//! every length is checked against the bytes actually available (and
//! [`MAX_BLOCK_LEN`]) before anything is allocated. A segment truncated exactly
//! at a block boundary is itself a valid (shorter) segment; such truncation is
//! caught by comparing against the index (the data region's length must equal
//! `offsets[n]`, and fetchers know each segment's expected length).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::marker::PhantomData;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{io_ctx, Error, Result};

/// Magic bytes ending a map output file (its index trailer's last four).
pub const INDEX_MAGIC: [u8; 4] = *b"EMSI";
/// Version of the map output format (2: the index is a trailer of the data file).
pub const FORMAT_VERSION: u32 = 2;
/// Bytes of the trailer's fixed part: version, partition count, crc, magic.
const TRAILER_FIXED_LEN: usize = 16;
/// Bytes read from a map output's end in one go when opening it: enough for
/// the whole trailer of up to 500 partitions.
const TAIL_READ: u64 = 4096;
/// Size of a block frame header in bytes.
pub const FRAME_HEADER_LEN: usize = 13;
/// Codec byte for blocks stored uncompressed.
pub const CODEC_RAW: u8 = 0;
/// Codec byte for blocks stored in the LZ4 block format.
pub const CODEC_LZ4: u8 = 1;
/// Largest allowed `uncompressed_len` / `stored_len` of a block (1 GiB).
pub const MAX_BLOCK_LEN: usize = 1 << 30;
/// Default target uncompressed block size (64 KiB).
pub const DEFAULT_BLOCK_SIZE: usize = 64 * 1024;

/// Worst-case LZ4 expansion ratio used to reject absurd `uncompressed_len`s.
const MAX_LZ4_RATIO: u64 = 256;

// ---------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------

/// Appends the postcard encoding of `(key, value)` to `buf`; returns its length.
/// On error `buf` is left unchanged.
pub(crate) fn append_record<K, V>(buf: &mut Vec<u8>, key: &K, value: &V) -> Result<usize>
where
    K: Serialize + 'static,
    V: Serialize + 'static,
{
    let start = buf.len();
    if let Err(e) = crate::record::put_field(buf, key).and_then(|_| crate::record::put_field(buf, value)) {
        buf.truncate(start);
        return Err(Error::Serialization(e.to_string()));
    }
    let n = buf.len() - start;
    if n == 0 {
        return Err(Error::Serialization(
            "record encodes to zero bytes; zero-sized (K, V) types are not supported".into(),
        ));
    }
    if n > MAX_BLOCK_LEN {
        buf.truncate(start);
        return Err(Error::Serialization(format!(
            "record encodes to {n} bytes, more than the {MAX_BLOCK_LEN}-byte block limit"
        )));
    }
    Ok(n)
}

/// Computes the frame header and the stored bytes for one block of record bytes.
fn prepare_frame<'a>(raw: &'a [u8], compress: bool, scratch: &'a mut Vec<u8>) -> ([u8; FRAME_HEADER_LEN], &'a [u8]) {
    debug_assert!(!raw.is_empty() && raw.len() <= MAX_BLOCK_LEN);
    let mut codec = CODEC_RAW;
    let mut stored: &[u8] = raw;
    if compress {
        let max = lz4_flex::block::get_maximum_output_size(raw.len());
        if scratch.len() < max {
            scratch.resize(max, 0);
        }
        if let Ok(n) = lz4_flex::block::compress_into(raw, &mut scratch[..]) {
            if n < raw.len() {
                codec = CODEC_LZ4;
                stored = &scratch[..n];
            }
        }
    }
    let mut header = [0u8; FRAME_HEADER_LEN];
    header[0..4].copy_from_slice(&(raw.len() as u32).to_le_bytes());
    header[4..8].copy_from_slice(&(stored.len() as u32).to_le_bytes());
    header[8..12].copy_from_slice(&crc32fast::hash(stored).to_le_bytes());
    header[12] = codec;
    (header, stored)
}

/// Writes one framed block holding `raw` to `out`; returns the bytes written.
pub(crate) fn write_frame<W: Write + ?Sized>(
    raw: &[u8],
    compress: bool,
    scratch: &mut Vec<u8>,
    out: &mut W,
) -> io::Result<u64> {
    let (header, stored) = prepare_frame(raw, compress, scratch);
    out.write_all(&header)?;
    out.write_all(stored)?;
    Ok((FRAME_HEADER_LEN + stored.len()) as u64)
}

/// Frames one block holding `raw` into an exactly-sized new `Vec`.
pub(crate) fn frame_to_vec(raw: &[u8], compress: bool, scratch: &mut Vec<u8>) -> Vec<u8> {
    let (header, stored) = prepare_frame(raw, compress, scratch);
    let mut v = Vec::with_capacity(FRAME_HEADER_LEN + stored.len());
    v.extend_from_slice(&header);
    v.extend_from_slice(stored);
    v
}

/// Accumulates records into blocks of about `block_size` uncompressed bytes
/// and writes them, framed and optionally LZ4-compressed, to an `io::Write`.
///
/// The buffers are reused across blocks and segments. Call
/// [`BlockWriter::finish_segment`] at the end of each partition so that the
/// next partition starts on a block boundary.
#[derive(Debug)]
pub struct BlockWriter {
    buf: Vec<u8>,
    scratch: Vec<u8>,
    block_size: usize,
    compress: bool,
    bytes_written: u64,
    segment_bytes: u64,
    records_written: u64,
}

impl BlockWriter {
    /// Creates a writer targeting blocks of `block_size` uncompressed bytes
    /// (clamped to `1..=MAX_BLOCK_LEN`), LZ4-compressing them if `compress`.
    pub fn new(block_size: usize, compress: bool) -> Self {
        let block_size = block_size.clamp(1, MAX_BLOCK_LEN);
        BlockWriter {
            buf: Vec::with_capacity(block_size.min(DEFAULT_BLOCK_SIZE * 4) + 64),
            scratch: Vec::new(),
            block_size,
            compress,
            bytes_written: 0,
            segment_bytes: 0,
            records_written: 0,
        }
    }

    /// Appends one record, flushing a block to `out` when the target size is reached.
    pub fn write_record<K, V, W>(&mut self, key: &K, value: &V, out: &mut W) -> Result<()>
    where
        K: Serialize + 'static,
        V: Serialize + 'static,
        W: Write + ?Sized,
    {
        let start = self.buf.len();
        append_record(&mut self.buf, key, value)?;
        if self.buf.len() > MAX_BLOCK_LEN {
            // The new record does not fit in the current block: flush the
            // records before it as one block and keep it as the next one.
            let rec = self.buf.split_off(start);
            self.flush_block(out)?;
            self.buf = rec;
        }
        self.records_written += 1;
        if self.buf.len() >= self.block_size {
            self.flush_block(out)?;
        }
        Ok(())
    }

    /// Appends one record that is already encoded (by a reader that kept
    /// records in their encoded form), flushing as [`Self::write_record`].
    pub(crate) fn write_encoded<W: Write + ?Sized>(&mut self, record: &[u8], out: &mut W) -> Result<()> {
        if self.buf.len() + record.len() > MAX_BLOCK_LEN {
            self.flush_block(out)?;
        }
        self.buf.extend_from_slice(record);
        self.records_written += 1;
        if self.buf.len() >= self.block_size {
            self.flush_block(out)?;
        }
        Ok(())
    }

    /// Writes the buffered records (if any) as a block.
    fn flush_block<W: Write + ?Sized>(&mut self, out: &mut W) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let n =
            write_frame(&self.buf, self.compress, &mut self.scratch, out).map_err(io_ctx("writing a shuffle block"))?;
        self.bytes_written += n;
        self.segment_bytes += n;
        self.buf.clear();
        Ok(())
    }

    /// Flushes the pending partial block and ends the current segment.
    /// Returns the segment's length in bytes (0 if it had no records).
    pub fn finish_segment<W: Write + ?Sized>(&mut self, out: &mut W) -> Result<u64> {
        self.flush_block(out)?;
        Ok(std::mem::take(&mut self.segment_bytes))
    }

    /// Total framed bytes written to the output so far.
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written
    }

    /// Total records accepted so far.
    pub fn records_written(&self) -> u64 {
        self.records_written
    }

    /// Record bytes buffered and not yet written.
    pub fn buffered_bytes(&self) -> usize {
        self.buf.len()
    }
}

// ---------------------------------------------------------------------------
// Index
// ---------------------------------------------------------------------------

/// Encodes the index trailer for the given partition lengths.
pub fn encode_index(partition_lengths: &[u64]) -> Result<Vec<u8>> {
    let n = u32::try_from(partition_lengths.len()).map_err(|_| {
        Error::InvalidArgument(format!("{} partitions exceed the format's u32 limit", partition_lengths.len()))
    })?;
    let mut out = Vec::with_capacity(trailer_len(n) as usize);
    let mut off = 0u64;
    out.extend_from_slice(&off.to_le_bytes());
    for &len in partition_lengths {
        off = off.checked_add(len).ok_or_else(|| Error::InvalidArgument("partition lengths overflow u64".into()))?;
        out.extend_from_slice(&off.to_le_bytes());
    }
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&n.to_le_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&INDEX_MAGIC);
    Ok(out)
}

/// Length in bytes of the index trailer of a map output with `n` partitions.
pub fn trailer_len(n: u32) -> u64 {
    8 * (u64::from(n) + 1) + TRAILER_FIXED_LEN as u64
}

/// Checks the fixed part ending a trailer (`tail` = at least its last 16
/// bytes) and returns the partition count it announces.
fn trailer_partitions(tail: &[u8]) -> Result<u32> {
    if tail.len() < TRAILER_FIXED_LEN + 8 {
        return Err(Error::corrupt(format!(
            "index trailer is {} bytes, shorter than the minimum {}",
            tail.len(),
            TRAILER_FIXED_LEN + 8
        )));
    }
    let fixed = &tail[tail.len() - TRAILER_FIXED_LEN..];
    let word = |i: usize| u32::from_le_bytes(fixed[i..i + 4].try_into().expect("4 bytes"));
    if fixed[12..16] != INDEX_MAGIC {
        return Err(Error::corrupt(format!("index trailer has bad magic {:02x?}", &fixed[12..16])));
    }
    let version = word(0);
    if version != FORMAT_VERSION {
        return Err(Error::corrupt(format!(
            "index trailer has unsupported version {version} (expected {FORMAT_VERSION})"
        )));
    }
    Ok(word(4))
}

/// Decodes and validates an index trailer (exactly its bytes), returning the
/// `num_partitions + 1` offsets.
pub fn decode_index(bytes: &[u8]) -> Result<Vec<u64>> {
    let n = trailer_partitions(bytes)?;
    if bytes.len() as u64 != trailer_len(n) {
        return Err(Error::corrupt(format!(
            "index trailer for {n} partitions should be {} bytes, found {}",
            trailer_len(n),
            bytes.len()
        )));
    }
    let (body, fixed) = bytes.split_at(bytes.len() - TRAILER_FIXED_LEN);
    let stored_crc = u32::from_le_bytes(fixed[8..12].try_into().expect("4 bytes"));
    let crc = crc32fast::hash(&bytes[..bytes.len() - 8]);
    if crc != stored_crc {
        return Err(Error::corrupt(format!(
            "index trailer crc mismatch (stored {stored_crc:#010x}, computed {crc:#010x})"
        )));
    }
    let offsets: Vec<u64> = body.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes"))).collect();
    if offsets[0] != 0 {
        return Err(Error::corrupt(format!("index offsets start at {}, not 0", offsets[0])));
    }
    if let Some(i) = offsets.windows(2).position(|w| w[1] < w[0]) {
        return Err(Error::corrupt(format!("index offsets decrease at partition {i}")));
    }
    Ok(offsets)
}

/// A map output file opened for reading, with its index trailer validated
/// (magic, version, length, crc, monotonic offsets, and the data region's
/// length against the last offset).
#[derive(Debug)]
pub struct MapOutputFile {
    file: File,
    path: PathBuf,
    offsets: Vec<u64>,
}

impl MapOutputFile {
    /// Opens `path` and reads its trailer: one read of the file's last 4 KiB
    /// (a second only for trailers of more than 500 partitions).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let ctx = || format!("reading map output file {}", path.display());
        let in_file = |e: Error| match e {
            Error::Corrupt { what } => Error::corrupt(format!("{}: {what}", path.display())),
            other => other,
        };
        let file = File::open(path).map_err(io_ctx(ctx()))?;
        let len = file.metadata().map_err(io_ctx(ctx()))?.len();
        if len < trailer_len(0) {
            return Err(Error::corrupt(format!(
                "{}: file is {len} bytes, shorter than the smallest map output ({} bytes)",
                path.display(),
                trailer_len(0)
            )));
        }
        let tail_len = len.min(TAIL_READ);
        let mut tail = vec![0u8; tail_len as usize];
        file.read_exact_at(&mut tail, len - tail_len).map_err(io_ctx(ctx()))?;
        let n = trailer_partitions(&tail).map_err(in_file)?;
        let tlen = trailer_len(n);
        if tlen > len {
            return Err(Error::corrupt(format!(
                "{}: file is {len} bytes, shorter than the {tlen}-byte index trailer of {n} partitions",
                path.display()
            )));
        }
        let offsets = if tlen <= tail_len {
            decode_index(&tail[(tail_len - tlen) as usize..])
        } else {
            let mut t = vec![0u8; tlen as usize];
            file.read_exact_at(&mut t, len - tlen).map_err(io_ctx(ctx()))?;
            decode_index(&t)
        }
        .map_err(in_file)?;
        let expected = *offsets.last().expect("at least one offset");
        if expected != len - tlen {
            return Err(Error::corrupt(format!(
                "{}: data region is {} bytes, its index says {expected}",
                path.display(),
                len - tlen
            )));
        }
        Ok(MapOutputFile { file, path: path.to_path_buf(), offsets })
    }

    /// The `num_partitions + 1` segment offsets.
    pub fn offsets(&self) -> &[u64] {
        &self.offsets
    }

    /// Reads the raw bytes of partition `reduce_id`'s segment (no decoding).
    pub fn read_segment(&self, reduce_id: usize) -> Result<Vec<u8>> {
        let (start, len) = segment_range(&self.offsets, reduce_id)?;
        let len = usize::try_from(len)
            .map_err(|_| Error::corrupt(format!("segment of {len} bytes does not fit in memory")))?;
        let mut buf = vec![0u8; len];
        self.file
            .read_exact_at(&mut buf, start)
            .map_err(io_ctx(format!("reading map output file {}", self.path.display())))?;
        Ok(buf)
    }

    /// A streaming, validating reader over partition `reduce_id`'s segment
    /// (buffered file reads; the segment is not loaded into memory at once).
    pub fn into_segment<K, V>(mut self, reduce_id: usize) -> Result<SegmentReader<K, V>> {
        let (start, len) = segment_range(&self.offsets, reduce_id)?;
        self.file
            .seek(SeekFrom::Start(start))
            .map_err(io_ctx(format!("reading map output file {}", self.path.display())))?;
        let label = format!("map output file {} partition {reduce_id}", self.path.display());
        let reader = io::BufReader::with_capacity(DEFAULT_BLOCK_SIZE * 2, self.file).take(len);
        Ok(SegmentReader::from_reader(reader).with_label(label))
    }
}

/// Reads and validates a map output file's index trailer, returning its
/// `num_partitions + 1` offsets.
pub fn read_index(path: impl AsRef<Path>) -> Result<Vec<u64>> {
    Ok(MapOutputFile::open(path)?.offsets)
}

/// Returns `(start, len)` of partition `reduce_id`'s segment given index offsets.
pub fn segment_range(offsets: &[u64], reduce_id: usize) -> Result<(u64, u64)> {
    let n = offsets.len().saturating_sub(1);
    if reduce_id >= n {
        return Err(Error::InvalidArgument(format!(
            "reduce partition {reduce_id} out of range (map output has {n} partitions)"
        )));
    }
    let (start, end) = (offsets[reduce_id], offsets[reduce_id + 1]);
    let len = end
        .checked_sub(start)
        .ok_or_else(|| Error::corrupt(format!("index offsets decrease at partition {reduce_id} ({start} > {end})")))?;
    Ok((start, len))
}

/// Reads the raw bytes of partition `reduce_id`'s segment of a map output
/// file (no decoding), after validating its index trailer.
pub fn read_segment(path: impl AsRef<Path>, reduce_id: usize) -> Result<Vec<u8>> {
    MapOutputFile::open(path)?.read_segment(reduce_id)
}

/// Opens a streaming, validating reader over partition `reduce_id`'s segment
/// of a local map output file (see [`MapOutputFile::into_segment`]).
pub fn open_segment<K, V>(path: impl AsRef<Path>, reduce_id: usize) -> Result<SegmentReader<K, V>> {
    MapOutputFile::open(path)?.into_segment(reduce_id)
}

// ---------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------

struct FrameHeader {
    uncompressed_len: usize,
    stored_len: usize,
    crc: u32,
    codec: u8,
}

fn parse_header(h: &[u8; FRAME_HEADER_LEN]) -> FrameHeader {
    let u = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    FrameHeader { uncompressed_len: u(0) as usize, stored_len: u(4) as usize, crc: u(8), codec: h[12] }
}

/// Where an error happened, for messages.
struct Ctx<'a> {
    label: &'a str,
    offset: u64,
}

impl Ctx<'_> {
    fn corrupt(&self, msg: impl std::fmt::Display) -> Error {
        Error::corrupt(format!("{}: block at offset {}: {msg}", self.label, self.offset))
    }
}

/// Validates a frame header; `available` = stored bytes known to follow, if known.
fn check_header(h: &FrameHeader, available: Option<usize>, ctx: &Ctx<'_>) -> Result<()> {
    if h.codec != CODEC_RAW && h.codec != CODEC_LZ4 {
        return Err(ctx.corrupt(format_args!("unknown codec {}", h.codec)));
    }
    if h.uncompressed_len == 0 {
        return Err(ctx.corrupt("empty block"));
    }
    if h.uncompressed_len > MAX_BLOCK_LEN || h.stored_len > MAX_BLOCK_LEN {
        return Err(ctx.corrupt(format_args!(
            "block lengths {}/{} exceed the {MAX_BLOCK_LEN}-byte limit",
            h.uncompressed_len, h.stored_len
        )));
    }
    if let Some(avail) = available {
        if h.stored_len > avail {
            return Err(
                ctx.corrupt(format_args!("truncated: block claims {} stored bytes, only {avail} remain", h.stored_len))
            );
        }
    }
    if h.codec == CODEC_RAW && h.stored_len != h.uncompressed_len {
        return Err(ctx.corrupt(format_args!(
            "raw block with stored length {} != uncompressed length {}",
            h.stored_len, h.uncompressed_len
        )));
    }
    if h.codec == CODEC_LZ4
        && (h.stored_len >= h.uncompressed_len || h.uncompressed_len as u64 > h.stored_len as u64 * MAX_LZ4_RATIO + 64)
    {
        return Err(ctx.corrupt(format_args!(
            "implausible lz4 block lengths (stored {}, uncompressed {})",
            h.stored_len, h.uncompressed_len
        )));
    }
    Ok(())
}

fn check_crc(stored: &[u8], expected: u32, ctx: &Ctx<'_>) -> Result<()> {
    let crc = crc32fast::hash(stored);
    if crc != expected {
        return Err(ctx.corrupt(format_args!("crc mismatch (stored {expected:#010x}, computed {crc:#010x})")));
    }
    Ok(())
}

fn decompress_block(stored: &[u8], ulen: usize, out: &mut Vec<u8>, ctx: &Ctx<'_>) -> Result<()> {
    out.clear();
    out.resize(ulen, 0);
    match lz4_flex::block::decompress_into(stored, out) {
        Ok(n) if n == ulen => Ok(()),
        Ok(n) => Err(ctx.corrupt(format_args!("lz4 block decompressed to {n} bytes, header says {ulen}"))),
        Err(e) => Err(ctx.corrupt(format_args!("bad lz4 stream: {e}"))),
    }
}

/// Like `read_exact`, but returns how many bytes were read before end of input.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

enum Source {
    Bytes { data: Vec<u8>, pos: usize },
    Reader(Box<dyn Read + Send>),
}

/// Iterator over the `(K, V)` records of a segment (or of any concatenation
/// of segments), validating every block.
///
/// Any damage is reported as [`Error::Corrupt`] (after which the iterator is
/// finished); it never panics on bad input and allocates at most what the
/// input actually contains (plus one block's decompressed size, itself
/// bounded by the LZ4 expansion ratio and [`MAX_BLOCK_LEN`]).
pub struct SegmentReader<K, V> {
    src: Source,
    /// Current block when it is not a sub-slice of `Source::Bytes` data.
    block: Vec<u8>,
    /// Scratch for stored bytes read from a `Source::Reader`.
    stored: Vec<u8>,
    /// Whether the current block lives in `Source::Bytes` data.
    in_src: bool,
    block_start: usize,
    pos: usize,
    end: usize,
    /// Offset (in the segment) of the next frame header.
    next_frame: u64,
    /// Offset (in the segment) of the current block's header.
    block_offset: u64,
    finished: bool,
    label: String,
    _marker: PhantomData<fn() -> (K, V)>,
}

impl<K, V> SegmentReader<K, V> {
    /// Reads records from raw segment bytes (e.g. from [`read_segment`] or the network).
    pub fn new(bytes: Vec<u8>) -> Self {
        Self::with_source(Source::Bytes { data: bytes, pos: 0 })
    }

    /// Reads records from a stream positioned at a block boundary, until its
    /// end. The stream should be buffered (e.g. a `BufReader<File>`).
    pub fn from_reader<R: Read + Send + 'static>(reader: R) -> Self {
        Self::with_source(Source::Reader(Box::new(reader)))
    }

    fn with_source(src: Source) -> Self {
        SegmentReader {
            src,
            block: Vec::new(),
            stored: Vec::new(),
            in_src: false,
            block_start: 0,
            pos: 0,
            end: 0,
            next_frame: 0,
            block_offset: 0,
            finished: false,
            label: String::from("segment"),
            _marker: PhantomData,
        }
    }

    /// Sets the description (file, shuffle, partition...) used in error messages.
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    /// Loads the next block. Returns `Ok(false)` at a clean end of input.
    fn load_block(&mut self) -> Result<bool> {
        self.block_offset = self.next_frame;
        let ctx = Ctx { label: &self.label, offset: self.block_offset };
        let h = match &mut self.src {
            Source::Bytes { data, pos } => {
                let remaining = data.len() - *pos;
                if remaining == 0 {
                    return Ok(false);
                }
                if remaining < FRAME_HEADER_LEN {
                    return Err(ctx.corrupt(format_args!("truncated frame header ({remaining} bytes)")));
                }
                let mut hdr = [0u8; FRAME_HEADER_LEN];
                hdr.copy_from_slice(&data[*pos..*pos + FRAME_HEADER_LEN]);
                let h = parse_header(&hdr);
                check_header(&h, Some(remaining - FRAME_HEADER_LEN), &ctx)?;
                let start = *pos + FRAME_HEADER_LEN;
                let stored = &data[start..start + h.stored_len];
                check_crc(stored, h.crc, &ctx)?;
                if h.codec == CODEC_RAW {
                    self.in_src = true;
                    self.block_start = start;
                } else {
                    decompress_block(stored, h.uncompressed_len, &mut self.block, &ctx)?;
                    self.in_src = false;
                    self.block_start = 0;
                }
                *pos = start + h.stored_len;
                h
            }
            Source::Reader(r) => {
                let mut hdr = [0u8; FRAME_HEADER_LEN];
                let n = read_full(r.as_mut(), &mut hdr).map_err(io_ctx(format!("reading {}", ctx.label)))?;
                if n == 0 {
                    return Ok(false);
                }
                if n < FRAME_HEADER_LEN {
                    return Err(ctx.corrupt(format_args!("truncated frame header ({n} bytes)")));
                }
                let h = parse_header(&hdr);
                check_header(&h, None, &ctx)?;
                self.stored.clear();
                // Reserve at most 1 MiB up front; beyond that the buffer only
                // grows as bytes actually arrive.
                self.stored.reserve(h.stored_len.min(1 << 20));
                Read::by_ref(r)
                    .take(h.stored_len as u64)
                    .read_to_end(&mut self.stored)
                    .map_err(io_ctx(format!("reading {}", ctx.label)))?;
                if self.stored.len() < h.stored_len {
                    return Err(ctx.corrupt(format_args!(
                        "truncated: block claims {} stored bytes, only {} remain",
                        h.stored_len,
                        self.stored.len()
                    )));
                }
                check_crc(&self.stored, h.crc, &ctx)?;
                if h.codec == CODEC_RAW {
                    std::mem::swap(&mut self.block, &mut self.stored);
                } else {
                    decompress_block(&self.stored, h.uncompressed_len, &mut self.block, &ctx)?;
                }
                self.in_src = false;
                self.block_start = 0;
                h
            }
        };
        self.pos = self.block_start;
        self.end = self.block_start + h.uncompressed_len;
        self.next_frame += (FRAME_HEADER_LEN + h.stored_len) as u64;
        Ok(true)
    }

    /// The next block's records, still encoded, for readers that keep them
    /// so; `None` at the end. Every block is checked as [`Iterator::next`]
    /// checks it; the records inside are the caller's to check.
    pub(crate) fn next_block(&mut self) -> Result<Option<&[u8]>> {
        if self.finished {
            return Ok(None);
        }
        match self.load_block() {
            Ok(true) => {
                let (start, end) = (self.pos, self.end);
                self.pos = end;
                let block: &[u8] = match (&self.src, self.in_src) {
                    (Source::Bytes { data, .. }, true) => data,
                    _ => &self.block,
                };
                Ok(Some(&block[start..end]))
            }
            Ok(false) => {
                self.finished = true;
                Ok(None)
            }
            Err(e) => {
                self.finished = true;
                Err(e)
            }
        }
    }

    /// A corruption error naming this reader's source and its current block.
    pub(crate) fn block_error(&self, msg: impl std::fmt::Display) -> Error {
        Ctx { label: &self.label, offset: self.block_offset }.corrupt(msg)
    }

    fn fail(&mut self, err: Error) -> Option<Result<(K, V)>> {
        self.finished = true;
        self.pos = self.end;
        Some(Err(err))
    }
}

impl<K: DeserializeOwned + 'static, V: DeserializeOwned + 'static> Iterator for SegmentReader<K, V> {
    type Item = Result<(K, V)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.pos < self.end {
                let block: &[u8] = match (&self.src, self.in_src) {
                    (Source::Bytes { data, .. }, true) => data,
                    _ => &self.block,
                };
                let slice = &block[self.pos..self.end];
                let rel = self.pos - self.block_start;
                let err = match crate::record::take_record::<K, V>(slice) {
                    Ok((rec, rest)) => {
                        let used = slice.len() - rest.len();
                        if used > 0 {
                            self.pos += used;
                            return Some(Ok(rec));
                        }
                        "record decoded from zero bytes".to_string()
                    }
                    Err(e) => e.to_string(),
                };
                let ctx = Ctx { label: &self.label, offset: self.block_offset };
                let err = ctx.corrupt(format_args!("undecodable record at byte {rel}: {err}"));
                return self.fail(err);
            }
            if self.finished {
                return None;
            }
            match self.load_block() {
                Ok(true) => {}
                Ok(false) => {
                    self.finished = true;
                    return None;
                }
                Err(e) => return self.fail(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Rec = (u32, String);

    fn sample_records(n: usize) -> Vec<Rec> {
        (0..n as u32).map(|i| (i, format!("value-{}-{}", i, "x".repeat((i % 13) as usize)))).collect()
    }

    fn encode(records: &[Rec], block_size: usize, compress: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let mut bw = BlockWriter::new(block_size, compress);
        for (k, v) in records {
            bw.write_record(k, v, &mut out).unwrap();
        }
        let len = bw.finish_segment(&mut out).unwrap();
        assert_eq!(len as usize, out.len());
        assert_eq!(bw.bytes_written() as usize, out.len());
        assert_eq!(bw.records_written() as usize, records.len());
        out
    }

    fn decode_all(bytes: Vec<u8>) -> Result<Vec<Rec>> {
        SegmentReader::<u32, String>::new(bytes).collect()
    }

    fn decode_stream(bytes: Vec<u8>) -> Result<Vec<Rec>> {
        SegmentReader::<u32, String>::from_reader(io::Cursor::new(bytes)).collect()
    }

    /// Builds a frame with a correct crc around arbitrary stored bytes.
    fn frame(ulen: u32, stored: &[u8], codec: u8) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&ulen.to_le_bytes());
        v.extend_from_slice(&(stored.len() as u32).to_le_bytes());
        v.extend_from_slice(&crc32fast::hash(stored).to_le_bytes());
        v.push(codec);
        v.extend_from_slice(stored);
        v
    }

    fn assert_corrupt(bytes: Vec<u8>) {
        let a = decode_all(bytes.clone());
        assert!(matches!(a, Err(Error::Corrupt { .. })), "bytes source: {a:?}");
        let b = decode_stream(bytes);
        assert!(matches!(b, Err(Error::Corrupt { .. })), "stream source: {b:?}");
    }

    #[test]
    fn round_trip_all_configurations() {
        let recs = sample_records(500);
        for &compress in &[false, true] {
            for &bs in &[1usize, 100, 4096, DEFAULT_BLOCK_SIZE] {
                let bytes = encode(&recs, bs, compress);
                assert_eq!(decode_all(bytes.clone()).unwrap(), recs);
                assert_eq!(decode_stream(bytes).unwrap(), recs);
            }
        }
        assert!(decode_all(Vec::new()).unwrap().is_empty());
        assert!(decode_stream(Vec::new()).unwrap().is_empty());
    }

    #[test]
    fn compression_is_used_and_incompressible_blocks_stay_raw() {
        let recs: Vec<Rec> = (0..200).map(|i| (i, "a".repeat(100))).collect();
        let compressed = encode(&recs, 4096, true);
        let raw = encode(&recs, 4096, false);
        assert!(compressed.len() < raw.len() / 4);
        assert_eq!(compressed[12], CODEC_LZ4);
        // A single tiny record does not compress: stored raw.
        let tiny = encode(&[(1, "z".into())], 4096, true);
        assert_eq!(tiny[12], CODEC_RAW);
        assert_eq!(decode_all(tiny).unwrap(), vec![(1, "z".to_string())]);
    }

    #[test]
    fn record_larger_than_block_gets_its_own_block() {
        let recs = vec![(1, "a".repeat(10_000)), (2, "b".into()), (3, "c".repeat(5000))];
        let bytes = encode(&recs, 16, true);
        assert_eq!(decode_all(bytes).unwrap(), recs);
    }

    #[test]
    fn segments_concatenate() {
        let a = sample_records(30);
        let b: Vec<Rec> = (100..140).map(|i| (i, "b".into())).collect();
        let mut bytes = encode(&a, 64, true);
        bytes.extend(encode(&b, 64, false));
        let all: Vec<Rec> = a.into_iter().chain(b).collect();
        assert_eq!(decode_all(bytes).unwrap(), all);
    }

    #[test]
    fn zero_sized_records_are_rejected() {
        let mut bw = BlockWriter::new(64, false);
        let mut out = Vec::new();
        assert!(matches!(bw.write_record(&(), &(), &mut out), Err(Error::Serialization(_))));
        assert_eq!(bw.buffered_bytes(), 0);
    }

    #[test]
    fn flipped_byte_in_block_is_corrupt() {
        for &compress in &[false, true] {
            let bytes = encode(&sample_records(50), 256, compress);
            let mut bad = bytes.clone();
            bad[FRAME_HEADER_LEN + 3] ^= 0x40;
            assert_corrupt(bad);
            // Last byte of the last block.
            let mut bad = bytes.clone();
            *bad.last_mut().unwrap() ^= 1;
            assert_corrupt(bad);
        }
    }

    #[test]
    fn truncation_is_corrupt() {
        let bytes = encode(&sample_records(50), 256, true);
        assert_corrupt(bytes[..5].to_vec()); // inside the header
        assert_corrupt(bytes[..FRAME_HEADER_LEN + 2].to_vec()); // inside the stored bytes
        assert_corrupt(bytes[..bytes.len() - 1].to_vec());
    }

    #[test]
    fn bad_headers_are_corrupt() {
        let payload = {
            let mut v = Vec::new();
            append_record(&mut v, &7u32, &"seven").unwrap();
            v
        };
        let good = frame(payload.len() as u32, &payload, CODEC_RAW);
        assert_eq!(decode_all(good.clone()).unwrap(), vec![(7, "seven".into())]);
        // Unknown codec.
        let mut bad = good.clone();
        bad[12] = 7;
        assert_corrupt(bad);
        // Raw claimed as lz4 (same lengths).
        let mut bad = good.clone();
        bad[12] = CODEC_LZ4;
        assert_corrupt(bad);
        // Uncompressed length wrong for a raw block.
        assert_corrupt(frame(payload.len() as u32 + 1, &payload, CODEC_RAW));
        // Huge lengths.
        assert_corrupt(frame(u32::MAX, &payload, CODEC_LZ4));
        let mut bad = good.clone();
        bad[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_corrupt(bad);
        let mut bad = good.clone();
        bad[4..8].copy_from_slice(&(payload.len() as u32 + 1000).to_le_bytes());
        assert_corrupt(bad);
        // Empty block.
        assert_corrupt(frame(0, &[], CODEC_RAW));
        // Bad crc.
        let mut bad = good.clone();
        bad[8] ^= 0xff;
        assert_corrupt(bad);
    }

    #[test]
    fn bad_lz4_stream_is_corrupt() {
        // Valid crc, garbage lz4: a literal run longer than the input.
        assert_corrupt(frame(100, &[0xf0, 0xff, 0xff, 1, 2, 3], CODEC_LZ4));
        // Valid lz4 that decompresses to fewer bytes than announced.
        let raw = vec![b'q'; 200];
        let c = lz4_flex::block::compress(&raw);
        assert_corrupt(frame(300, &c, CODEC_LZ4));
        assert_corrupt(frame(150, &c, CODEC_LZ4));
    }

    #[test]
    fn undecodable_records_are_corrupt() {
        // u32 key followed by a string whose length prefix exceeds the block.
        let mut payload = Vec::new();
        append_record(&mut payload, &1u32, &"ok").unwrap();
        payload.extend_from_slice(&[5, 100, b'a']);
        assert_corrupt(frame(payload.len() as u32, &payload, CODEC_RAW));
        // Invalid utf-8.
        let payload = vec![1, 2, 0xff, 0xfe];
        assert_corrupt(frame(payload.len() as u32, &payload, CODEC_RAW));
        // Over-long varint.
        let payload = vec![0xff; 12];
        assert_corrupt(frame(payload.len() as u32, &payload, CODEC_RAW));
    }

    #[test]
    fn reader_stops_after_an_error() {
        let mut bytes = encode(&sample_records(50), 64, false);
        let n = bytes.len();
        bytes[n - 2] ^= 1;
        let mut r = SegmentReader::<u32, String>::new(bytes).with_label("test segment");
        let mut saw_err = false;
        for rec in r.by_ref() {
            if let Err(e) = rec {
                assert!(e.to_string().contains("test segment"), "{e}");
                saw_err = true;
                break;
            }
        }
        assert!(saw_err);
        assert!(r.next().is_none());
    }

    #[test]
    fn map_output_round_trip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.data");
        let recs = sample_records(20);
        let seg0 = encode(&recs[..10], 64, true);
        let seg2 = encode(&recs[10..], 64, false);
        let mut all = seg0.clone();
        all.extend_from_slice(&seg2);
        let trailer = encode_index(&[seg0.len() as u64, 0, seg2.len() as u64]).unwrap();
        assert_eq!(trailer.len() as u64, trailer_len(3));
        let good = [all.clone(), trailer.clone()].concat();
        std::fs::write(&path, &good).unwrap();
        let offsets = read_index(&path).unwrap();
        assert_eq!(offsets, vec![0, seg0.len() as u64, seg0.len() as u64, all.len() as u64]);
        assert_eq!(read_segment(&path, 0).unwrap(), seg0);
        assert!(read_segment(&path, 1).unwrap().is_empty());
        assert_eq!(read_segment(&path, 2).unwrap(), seg2);
        let streamed: Vec<Rec> = open_segment(&path, 2).unwrap().collect::<Result<_>>().unwrap();
        assert_eq!(&streamed[..], &recs[10..]);
        let first: Vec<Rec> = open_segment(&path, 0).unwrap().collect::<Result<_>>().unwrap();
        assert_eq!(&first[..], &recs[..10]);
        assert_eq!(open_segment::<u32, String>(&path, 1).unwrap().count(), 0);
        assert!(matches!(read_segment(&path, 3), Err(Error::InvalidArgument(_))));
        assert_eq!(segment_range(&offsets, 2).unwrap(), (seg0.len() as u64, seg2.len() as u64));
        assert!(segment_range(&[0, 10, 5], 1).unwrap_err().is_corrupt());
        assert!(segment_range(&[], 0).is_err());

        // Zero partitions: a file that is only a trailer.
        let zero = dir.path().join("zero.data");
        std::fs::write(&zero, encode_index(&[]).unwrap()).unwrap();
        assert_eq!(read_index(&zero).unwrap(), vec![0]);

        // Any damage to the trailer, or a data region of the wrong length, is
        // reported as corruption naming the file.
        let check = |bytes: &[u8]| {
            std::fs::write(&path, bytes).unwrap();
            let r = read_index(&path);
            match &r {
                Err(Error::Corrupt { what }) => assert!(what.contains("x.data"), "{what}"),
                other => panic!("{other:?}"),
            }
            assert!(matches!(read_segment(&path, 0), Err(Error::Corrupt { .. })));
        };
        for i in all.len()..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x10;
            check(&bad);
            assert!(decode_index(&bad[all.len()..]).is_err());
        }
        check(&good[..good.len() - 1]);
        check(&good[good.len() - 10..]);
        check(&[]);
        check(&[&all[..all.len() - 1], &trailer[..]].concat());
        check(&[&all[..], &[0], &trailer[..]].concat());
        // A trailer announcing more partitions than the file could hold.
        let mut huge = good.clone();
        let at = huge.len() - 12;
        huge[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        check(&huge);
    }

    #[test]
    fn trailers_longer_than_the_first_tail_read_are_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wide.data");
        let recs = sample_records(3);
        let seg = encode(&recs, 64, false);
        // 1,000 partitions, all empty but the last: an 8 KiB trailer.
        let mut lengths = vec![0u64; 1000];
        lengths[999] = seg.len() as u64;
        let trailer = encode_index(&lengths).unwrap();
        assert!(trailer.len() as u64 > TAIL_READ);
        std::fs::write(&path, [seg.clone(), trailer].concat()).unwrap();
        assert_eq!(read_segment(&path, 999).unwrap(), seg);
        assert!(read_segment(&path, 3).unwrap().is_empty());
        assert_eq!(read_index(&path).unwrap().len(), 1001);
    }

    fn check_damaged(original: &[Rec], damaged: Vec<u8>, stream: bool, may_be_prefix: bool) {
        let iter: Box<dyn Iterator<Item = Result<Rec>>> = if stream {
            Box::new(SegmentReader::from_reader(io::Cursor::new(damaged)))
        } else {
            Box::new(SegmentReader::new(damaged))
        };
        let mut got = Vec::new();
        let mut errored = false;
        for r in iter {
            match r {
                Ok(rec) => got.push(rec),
                Err(e) => {
                    assert!(e.is_corrupt(), "{e:?}");
                    errored = true;
                    break;
                }
            }
        }
        // Whatever was yielded before an error is exactly the original prefix.
        assert!(got.len() <= original.len());
        assert_eq!(&got[..], &original[..got.len()]);
        if !errored && !may_be_prefix {
            assert_eq!(got.len(), original.len(), "damage went unnoticed");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 96,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn damaged_segments_never_panic_or_lie(
            recs in proptest::collection::vec((any::<u32>(), "[a-z]{0,40}"), 1..60),
            block_size in 16usize..512,
            compress in any::<bool>(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
            cut in any::<prop::sample::Index>(),
        ) {
            let bytes = encode(&recs, block_size, compress);
            let mut flipped = bytes.clone();
            for (i, x) in &flips {
                let i = i.index(flipped.len());
                flipped[i] ^= x;
            }
            check_damaged(&recs, flipped.clone(), false, false);
            check_damaged(&recs, flipped, true, false);
            let cut = cut.index(bytes.len());
            // A cut exactly at a frame boundary is a valid shorter segment.
            check_damaged(&recs, bytes[..cut].to_vec(), false, true);
            check_damaged(&recs, bytes[..cut].to_vec(), true, true);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_all(bytes.clone());
            let _ = decode_stream(bytes.clone());
            let _ = decode_index(&bytes);
        }

        /// The checksum stops damage, not a forger: arbitrary lz4 input
        /// behind a correct crc reaches lz4_flex's unsafe (bounds-checked:
        /// `checked-decode`) decoder, and must come out as an error or
        /// exactly the announced bytes, never a panic or a read outside.
        #[test]
        fn forged_lz4_blocks_never_panic(
            stored in proptest::collection::vec(any::<u8>(), 0..200),
            ulen in 0u32..600,
            seed in proptest::collection::vec(any::<u8>(), 1..300),
            flip in any::<prop::sample::Index>(),
        ) {
            let _ = decode_all(frame(ulen, &stored, CODEC_LZ4));
            // Real lz4 with one byte changed: mostly valid-looking streams.
            let mut c = lz4_flex::block::compress(&seed);
            let i = flip.index(c.len());
            c[i] = c[i].wrapping_add(1);
            let _ = decode_all(frame(seed.len() as u32, &c, CODEC_LZ4));
            let _ = decode_stream(frame(seed.len() as u32, &c, CODEC_LZ4));
        }
    }
}
