//! The map side of the shuffle: [`write_plain`] and [`write_combined`] turn a
//! map task's `(K, V)` records into one map output file: the data, then its
//! index (see [`format`](crate::format)).
//!
//! Both buffer records in memory under a [`MemoryReservation`], growing it in
//! [`WriteConfig::memory_chunk`] steps; when the pool refuses, the buffer is
//! spilled to a temporary file in [`WriteConfig::spill_dir`] and the
//! reservation is released. At the end the spills and the in-memory buffer
//! are merged, partition by partition, into the output file (written under a
//! temporary name, the index trailer appended, then renamed into place).
//! Spill files are deleted on success and on error (drop guards).
//!
//! * `write_plain` keeps, per partition, an open block of serialized records
//!   plus already-framed (compressed) blocks, so memory accounting is exact
//!   and spilling/merging is a byte copy (segments concatenate).
//! * `write_combined` keeps a hash map key → combiner; spills are sorted by
//!   (partition, [`key_hash`](crate::key_hash)) and merged with a hash-ordered
//!   k-way merge that combines equal keys (see the `spill` module).
//!
//! Records come from a [`RecordInput`], such as an iterator of
//! `Result<(K, V), E>` with `E: Into<Error>`: an upstream failure aborts the
//! write and is returned unchanged (pass infallible data as
//! `iter.map(Ok::<_, std::convert::Infallible>)`; wrap foreign errors with
//! [`Error::upstream`]).

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::aggregator::Aggregator;
use crate::error::{io_ctx, Error, Result};
use crate::format::{append_record, encode_index, frame_to_vec, write_frame, MAX_BLOCK_LEN};
use crate::input::RecordInput;
use crate::memory::{ensure_reserved, MemoryReservation};
use crate::spill::{finish_writer, write_combined_output, Combiner, SpillEnv, SpillFile, TempOutput, IO_BUFFER};

/// Configuration of the spilling writers and reduce-side operators.
#[derive(Clone, Debug)]
pub struct WriteConfig {
    /// LZ4-compress blocks (default `true`).
    pub compress: bool,
    /// Target uncompressed block size in bytes (default 64 KiB).
    pub block_size: usize,
    /// Directory for spill files (created on first spill).
    pub spill_dir: PathBuf,
    /// How many bytes to request from the pool at a time (default 1 MiB).
    pub memory_chunk: usize,
    /// Distinct keys a combiner should expect (default 0: start small and
    /// grow). Sizing the table once spares the rehash of every doubling.
    pub expected_keys: usize,
}

impl Default for WriteConfig {
    fn default() -> Self {
        WriteConfig {
            compress: true,
            block_size: crate::format::DEFAULT_BLOCK_SIZE,
            spill_dir: std::env::temp_dir(),
            memory_chunk: 1 << 20,
            expected_keys: 0,
        }
    }
}

impl WriteConfig {
    /// Default configuration spilling into `spill_dir`.
    pub fn new(spill_dir: impl Into<PathBuf>) -> Self {
        WriteConfig { spill_dir: spill_dir.into(), ..WriteConfig::default() }
    }

    fn env<'a>(&'a self, mem: &'a mut MemoryReservation, dir: &'a Path) -> SpillEnv<'a> {
        SpillEnv {
            mem,
            dir,
            block_size: self.block_size.clamp(1, MAX_BLOCK_LEN),
            compress: self.compress,
            chunk: self.memory_chunk.max(1),
        }
    }
}

/// What a map task wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MapOutputInfo {
    /// Byte length of each reduce partition's segment in the data file.
    pub partition_lengths: Vec<u64>,
    /// Records in the data file (after map-side combining, if any).
    pub records_written: u64,
    /// Length of the data region (the file adds the index trailer).
    pub bytes_written: u64,
    /// Number of spill files written.
    pub spill_count: u32,
    /// Total bytes written to spill files.
    pub bytes_spilled: u64,
}

fn check_num_partitions(n: usize) -> Result<()> {
    if u32::try_from(n).is_err() {
        return Err(Error::InvalidArgument(format!("{n} partitions exceed the format's u32 limit")));
    }
    Ok(())
}

/// Appends the index trailer to the written data and renames the file into place.
fn publish(tmp: TempOutput, mut out: BufWriter<File>, path: &Path, lengths: &[u64]) -> Result<()> {
    let index = encode_index(lengths)?;
    out.write_all(&index).map_err(io_ctx(format!("writing the index of {}", path.display())))?;
    finish_writer(out, path)?;
    tmp.commit()
}

/// Per-partition buffer of the plain writer: framed blocks plus one open block.
#[derive(Default)]
struct PartBuf {
    open: Vec<u8>,
    closed: Vec<Vec<u8>>,
}

/// One spill file of the plain writer: per-partition segment lengths.
struct PlainSpill {
    file: SpillFile,
    lengths: Vec<u64>,
}

/// Writes a map task's records without map-side combining: records are
/// grouped by `partition_of(&k)` (which must be `< num_partitions`); the order
/// within a partition is arrival order, per spill (deterministic).
///
/// `records` yields `Result<(K, V), E>`; the first `Err` aborts the write
/// (no output files are left behind) and is returned converted into [`Error`].
/// The reservation is released before returning.
#[allow(clippy::too_many_arguments)]
pub fn write_plain<K, V, I, P>(
    records: I,
    num_partitions: usize,
    partition_of: P,
    mem: &mut MemoryReservation,
    cfg: &WriteConfig,
    path: &Path,
) -> Result<MapOutputInfo>
where
    K: Serialize + 'static,
    V: Serialize + 'static,
    I: RecordInput<(K, V)>,
    P: Fn(&K) -> usize,
{
    let res = write_plain_inner(records, num_partitions, partition_of, mem, cfg, path);
    mem.free();
    res
}

fn write_plain_inner<K, V, I, P>(
    records: I,
    n: usize,
    partition_of: P,
    mem: &mut MemoryReservation,
    cfg: &WriteConfig,
    path: &Path,
) -> Result<MapOutputInfo>
where
    K: Serialize + 'static,
    V: Serialize + 'static,
    I: RecordInput<(K, V)>,
    P: Fn(&K) -> usize,
{
    check_num_partitions(n)?;
    let env = cfg.env(mem, &cfg.spill_dir);
    let block_size = env.block_size;
    let mut parts: Vec<PartBuf> = (0..n).map(|_| PartBuf::default()).collect();
    let mut scratch = Vec::new();
    let mut spills: Vec<PlainSpill> = Vec::new();
    let mut bytes_spilled = 0u64;
    let mut records_written = 0u64;
    // Bytes held by `parts` (open capacities + framed blocks).
    let mut buffered = 0usize;

    let mut records = records;
    while let Some((k, v)) = records.next_record()? {
        let p = partition_of(&k);
        let Some(part) = parts.get_mut(p) else {
            return Err(Error::InvalidArgument(format!("partitioner returned {p} for a shuffle with {n} partitions")));
        };
        let before = part.open.capacity();
        let start = part.open.len();
        append_record(&mut part.open, &k, &v)?;
        records_written += 1;
        if part.open.len() > MAX_BLOCK_LEN {
            // The new record would overflow the block limit: close the block
            // before it and start a new one with it.
            let rec = part.open.split_off(start);
            let framed = frame_to_vec(&part.open, env.compress, &mut scratch);
            buffered += framed.len();
            part.closed.push(framed);
            part.open = rec;
        }
        if part.open.len() >= block_size {
            let framed = frame_to_vec(&part.open, env.compress, &mut scratch);
            buffered += framed.len();
            part.closed.push(framed);
            part.open.clear();
        }
        buffered = (buffered + part.open.capacity()).saturating_sub(before);
        if !ensure_reserved(env.mem, buffered + scratch.capacity(), env.chunk) {
            let (file, f) = SpillFile::create(env.dir)?;
            let mut w = BufWriter::with_capacity(IO_BUFFER, f);
            let mut lengths = vec![0u64; n];
            for (part, len) in parts.iter_mut().zip(lengths.iter_mut()) {
                *len = drain_part(part, env.compress, &mut scratch, &mut w)
                    .map_err(io_ctx(format!("writing spill file {}", file.path().display())))?;
                *part = PartBuf::default();
            }
            finish_writer(w, file.path())?;
            let total: u64 = lengths.iter().sum();
            tracing::debug!(path = %file.path().display(), bytes = total, "spilled plain shuffle buffer");
            bytes_spilled += total;
            spills.push(PlainSpill { file, lengths });
            buffered = 0;
            env.mem.free();
        }
    }

    let (data_tmp, f) = TempOutput::create(path)?;
    let mut w = BufWriter::with_capacity(IO_BUFFER, f);
    let mut readers = spills.iter().map(|s| s.file.open()).collect::<Result<Vec<BufReader<File>>>>()?;
    let mut lengths = vec![0u64; n];
    let data_ctx = || format!("writing map output file {}", path.display());
    for (p, (part, len)) in parts.iter_mut().zip(lengths.iter_mut()).enumerate() {
        for (spill, reader) in spills.iter().zip(readers.iter_mut()) {
            let want = spill.lengths[p];
            let copied = io::copy(&mut Read::by_ref(reader).take(want), &mut w).map_err(io_ctx(data_ctx()))?;
            if copied != want {
                return Err(Error::corrupt(format!(
                    "spill file {} truncated: partition {p} expected {want} bytes, got {copied}",
                    spill.file.path().display()
                )));
            }
            *len += want;
        }
        *len += drain_part(part, env.compress, &mut scratch, &mut w).map_err(io_ctx(data_ctx()))?;
    }
    drop(readers);
    publish(data_tmp, w, path, &lengths)?;
    Ok(MapOutputInfo {
        bytes_written: lengths.iter().sum(),
        partition_lengths: lengths,
        records_written,
        spill_count: spills.len() as u32,
        bytes_spilled,
    })
}

/// Writes a partition buffer's framed blocks and its open block to `w`;
/// returns the bytes written.
fn drain_part<W: Write>(part: &mut PartBuf, compress: bool, scratch: &mut Vec<u8>, w: &mut W) -> io::Result<u64> {
    let mut len = 0u64;
    for block in part.closed.drain(..) {
        w.write_all(&block)?;
        len += block.len() as u64;
    }
    if !part.open.is_empty() {
        len += write_frame(&part.open, compress, scratch, w)?;
        part.open.clear();
    }
    Ok(len)
}

/// Writes a map task's records with map-side combining: values are combined
/// per key with `agg` (`create_combiner` / `merge_value`, and
/// `merge_combiners` across spills), and `(K, C)` records are written, each
/// key at most once per partition, ordered by key hash within a partition
/// when spills happened (arbitrary but deterministic otherwise).
///
/// Error handling and reservation release as for [`write_plain`].
#[allow(clippy::too_many_arguments)]
pub fn write_combined<K, V, C, A, I, P>(
    records: I,
    num_partitions: usize,
    partition_of: P,
    agg: &A,
    mem: &mut MemoryReservation,
    cfg: &WriteConfig,
    path: &Path,
) -> Result<MapOutputInfo>
where
    K: std::hash::Hash + Eq + Serialize + DeserializeOwned + 'static,
    C: Serialize + DeserializeOwned + 'static,
    A: Aggregator<K, V, C> + ?Sized,
    I: RecordInput<(K, V)>,
    P: Fn(&K) -> usize,
{
    let res = (|| {
        check_num_partitions(num_partitions)?;
        let mut env = cfg.env(mem, &cfg.spill_dir);
        let mut comb: Combiner<K, C> = Combiner::new(num_partitions, cfg.expected_keys);
        crate::spill::for_each_batch(records, |batch| comb.insert_batch(batch, &agg, &partition_of, &mut env))?;
        let (data_tmp, f) = TempOutput::create(path)?;
        let mut w = BufWriter::with_capacity(IO_BUFFER, f);
        let mut bw = crate::format::BlockWriter::new(env.block_size, env.compress);
        let lengths = write_combined_output(&mut comb, &agg, &partition_of, &mut bw, &mut w)?;
        publish(data_tmp, w, path, &lengths)?;
        Ok(MapOutputInfo {
            bytes_written: bw.bytes_written(),
            partition_lengths: lengths,
            records_written: bw.records_written(),
            spill_count: comb.spills.len() as u32,
            bytes_spilled: comb.bytes_spilled,
        })
    })();
    mem.free();
    res
}
