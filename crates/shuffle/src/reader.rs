//! Reduce-side operators over decoded shuffle records: aggregation by key
//! ([`combine_by_key`], [`merge_combiners_by_key`]) and external sorting
//! ([`sort_by_key`]), both spilling under memory pressure.
//!
//! Aggregation reuses the map side's spillable hash map and hash-ordered
//! merge (the `spill` module) with a single partition. Sorting buffers
//! `(K, V)` pairs, spills sorted runs, and k-way merges them with a binary
//! heap.
//!
//! The returned iterators own everything they need: the spill files (deleted
//! when the iterator is dropped), the in-memory remainder, and the memory
//! reservation covering it (moved out of the caller's reservation with
//! [`MemoryReservation::take`] and released on drop). Both take `spill_dir`
//! explicitly; `cfg.spill_dir` is ignored, the other `cfg` fields apply.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fs::File;
use std::hash::Hash;
use std::io::{BufReader, BufWriter};
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::aggregator::{Aggregator, MergeCombiners};
use crate::byte_sort::{sorts_encoded, EncodedRun};
use crate::error::{Error, Result};
use crate::format::{BlockWriter, SegmentReader, MAX_BLOCK_LEN};
use crate::input::RecordInput;
use crate::memory::{ensure_reserved, MemoryReservation};
use crate::prefetch::{prefetch, prefetch_heap};
use crate::record::{is_byte_like, sort_prefix};
use crate::spill::for_each_batch;
use crate::spill::{
    encoded_size, finish_writer, strip, Combiner, Counted, Entry, HashMerge, Run, SizeEstimator, SpillEnv, SpillFile,
    StripFn, IO_BUFFER,
};
use crate::writer::WriteConfig;

fn env<'a>(cfg: &'a WriteConfig, mem: &'a mut MemoryReservation, dir: &'a Path) -> SpillEnv<'a> {
    SpillEnv {
        mem,
        dir,
        block_size: cfg.block_size.clamp(1, MAX_BLOCK_LEN),
        compress: cfg.compress,
        chunk: cfg.memory_chunk.max(1),
    }
}

type CombineRun<K, C> =
    Run<std::iter::Map<std::vec::IntoIter<Entry<K, C>>, StripFn<K, C>>, Counted<SegmentReader<K, C>>>;

enum CombinedInner<K, V, C, A> {
    Mem(crate::table::Drain<K, C>),
    Merge(HashMerge<K, V, C, A, CombineRun<K, C>>),
}

/// Iterator returned by [`combine_by_key`] / [`merge_combiners_by_key`]:
/// each key exactly once with its final combiner. Owns its spill files and
/// memory reservation (released on drop).
pub struct CombinedIter<K, V, C, A> {
    // Field order matters: readers are dropped before the files are deleted.
    inner: CombinedInner<K, V, C, A>,
    _spills: Vec<SpillFile>,
    mem: MemoryReservation,
    spill_count: u32,
    bytes_spilled: u64,
    keys: Option<usize>,
}

impl<K, V, C, A> CombinedIter<K, V, C, A> {
    /// Distinct keys, when aggregation stayed in memory (unknown until
    /// the merge otherwise).
    pub fn keys(&self) -> Option<usize> {
        self.keys
    }

    /// Bytes written to spill files.
    pub fn bytes_spilled(&self) -> u64 {
        self.bytes_spilled
    }

    /// Number of spill files written while aggregating.
    pub fn spill_count(&self) -> u32 {
        self.spill_count
    }

    /// Bytes of the pool held by this iterator.
    pub fn reserved(&self) -> usize {
        self.mem.size()
    }
}

impl<K, V, C, A> Iterator for CombinedIter<K, V, C, A>
where
    K: Hash + Eq,
    A: Aggregator<K, V, C>,
    C: DeserializeOwned + 'static,
    K: DeserializeOwned + 'static,
{
    type Item = Result<(K, C)>;

    fn next(&mut self) -> Option<Result<(K, C)>> {
        match &mut self.inner {
            CombinedInner::Mem(it) => match it.next() {
                Some(entry) => Some(Ok(entry)),
                None => {
                    self.mem.free();
                    None
                }
            },
            CombinedInner::Merge(m) => m.next(),
        }
    }
}

/// Aggregates raw values by key on the reduce side (no map-side combine):
/// `create_combiner` / `merge_value` per value, spilling hash-sorted runs when
/// `mem` is refused, and `merge_combiners` when merging the runs.
///
/// `agg` is taken by value; pass `&agg` to borrow it (the iterator then
/// borrows it too) or an `Arc` for a `'static` iterator. The memory held by
/// the in-memory remainder is moved from `mem` into the returned iterator.
/// On error, spill files are deleted and `mem` is released.
pub fn combine_by_key<K, V, C, A, I>(
    records: I,
    agg: A,
    mem: &mut MemoryReservation,
    spill_dir: &Path,
    cfg: &WriteConfig,
) -> Result<CombinedIter<K, V, C, A>>
where
    K: Hash + Eq + Serialize + DeserializeOwned + 'static,
    C: Serialize + DeserializeOwned + 'static,
    A: Aggregator<K, V, C>,
    I: RecordInput<(K, V)>,
{
    let res = combine_inner(records, agg, mem, spill_dir, cfg);
    if res.is_err() {
        mem.free();
    }
    res
}

fn combine_inner<K, V, C, A, I>(
    records: I,
    agg: A,
    mem: &mut MemoryReservation,
    spill_dir: &Path,
    cfg: &WriteConfig,
) -> Result<CombinedIter<K, V, C, A>>
where
    K: Hash + Eq + Serialize + DeserializeOwned + 'static,
    C: Serialize + DeserializeOwned + 'static,
    A: Aggregator<K, V, C>,
    I: RecordInput<(K, V)>,
{
    let single = |_: &K| 0usize;
    let mut comb: Combiner<K, C> = Combiner::new(1, cfg.expected_keys);
    {
        let mut env = env(cfg, mem, spill_dir);
        for_each_batch(records, |batch| comb.insert_batch(batch, &agg, &single, &mut env))?;
    }
    let spill_count = comb.spills.len() as u32;
    let bytes_spilled = comb.bytes_spilled;
    if comb.spills.is_empty() {
        let keys = comb.len();
        return Ok(CombinedIter {
            inner: CombinedInner::Mem(comb.into_entries()),
            _spills: Vec::new(),
            mem: mem.take(),
            spill_count,
            bytes_spilled,
            keys: Some(keys),
        });
    }
    let entries = comb.drain_sorted(&single, true)?;
    let spills = std::mem::take(&mut comb.spills);
    let mut sources: Vec<CombineRun<K, C>> = Vec::with_capacity(spills.len() + 1);
    for run in &spills {
        sources.push(Run::Spill(Counted::new(run.reader()?, run.records[0])));
    }
    let strip_fn: StripFn<K, C> = strip;
    sources.push(Run::Mem(entries.into_iter().map(strip_fn)));
    Ok(CombinedIter {
        inner: CombinedInner::Merge(HashMerge::new(sources, agg)),
        _spills: spills.into_iter().map(|r| r.file).collect(),
        mem: mem.take(),
        spill_count,
        bytes_spilled,
        keys: None,
    })
}

/// Like [`combine_by_key`] for inputs that are already combiners (the
/// reduce side of a shuffle combined map-side): combiners of equal keys are
/// merged with `agg.merge_combiners`. Implemented as `combine_by_key` with
/// the [`MergeCombiners`] adapter.
pub fn merge_combiners_by_key<K, V, C, A, I>(
    records: I,
    agg: A,
    mem: &mut MemoryReservation,
    spill_dir: &Path,
    cfg: &WriteConfig,
) -> Result<CombinedIter<K, C, C, MergeCombiners<A, V>>>
where
    K: Hash + Eq + Serialize + DeserializeOwned + 'static,
    C: Serialize + DeserializeOwned + 'static,
    A: Aggregator<K, V, C>,
    I: RecordInput<(K, C)>,
{
    combine_by_key(records, MergeCombiners::new(agg), mem, spill_dir, cfg)
}

// ---------------------------------------------------------------------------
// External sort
// ---------------------------------------------------------------------------

/// A merge-heap entry; the heap is a max-heap, so the comparison is reversed
/// for ascending order.
struct HeapItem<K, V> {
    key: K,
    value: V,
    src: usize,
    ascending: bool,
}

impl<K: Ord, V> Ord for HeapItem<K, V> {
    fn cmp(&self, other: &Self) -> Ordering {
        let o = self.key.cmp(&other.key).then(self.src.cmp(&other.src));
        if self.ascending {
            o.reverse()
        } else {
            o
        }
    }
}

impl<K: Ord, V> PartialOrd for HeapItem<K, V> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<K: Ord, V> PartialEq for HeapItem<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl<K: Ord, V> Eq for HeapItem<K, V> {}

type SortRun<K, V> = Run<InOrder<K, V>, Counted<SegmentReader<K, V>>>;

struct SortMerge<K, V> {
    sources: Vec<SortRun<K, V>>,
    heap: BinaryHeap<HeapItem<K, V>>,
    ascending: bool,
    started: bool,
    failed: bool,
}

impl<K: Ord + DeserializeOwned + 'static, V: DeserializeOwned + 'static> SortMerge<K, V> {
    fn advance(&mut self, src: usize) -> Result<()> {
        match self.sources[src].next() {
            Some(Ok((key, value))) => {
                self.heap.push(HeapItem { key, value, src, ascending: self.ascending });
                Ok(())
            }
            Some(Err(e)) => Err(e),
            None => Ok(()),
        }
    }

    fn next_item(&mut self) -> Result<Option<(K, V)>> {
        if !self.started {
            self.started = true;
            for i in 0..self.sources.len() {
                self.advance(i)?;
            }
        }
        let Some(item) = self.heap.pop() else {
            return Ok(None);
        };
        self.advance(item.src)?;
        Ok(Some((item.key, item.value)))
    }
}

enum SortedInner<K, V> {
    Mem(InOrder<K, V>),
    Merge(SortMerge<K, V>),
}

/// Iterator returned by [`sort_by_key`]. Owns its spill files and memory
/// reservation (released on drop).
pub struct SortedIter<K, V> {
    // Field order matters: readers are dropped before the files are deleted.
    inner: SortedInner<K, V>,
    _spills: Vec<SpillFile>,
    mem: MemoryReservation,
    spill_count: u32,
    bytes_spilled: u64,
}

impl<K, V> SortedIter<K, V> {
    /// Bytes written to spill files.
    pub fn bytes_spilled(&self) -> u64 {
        self.bytes_spilled
    }

    /// Number of sorted runs spilled to disk.
    pub fn spill_count(&self) -> u32 {
        self.spill_count
    }

    /// Bytes of the pool held by this iterator.
    pub fn reserved(&self) -> usize {
        self.mem.size()
    }
}

impl<K: Ord + DeserializeOwned + 'static, V: DeserializeOwned + 'static> Iterator for SortedIter<K, V> {
    type Item = Result<(K, V)>;

    fn next(&mut self) -> Option<Result<(K, V)>> {
        match &mut self.inner {
            SortedInner::Mem(it) => {
                let r = it.next();
                if r.is_none() {
                    self.mem.free();
                }
                r.map(Ok)
            }
            SortedInner::Merge(m) => {
                if m.failed {
                    return None;
                }
                match m.next_item() {
                    Ok(Some(x)) => Some(Ok(x)),
                    Ok(None) => {
                        self.mem.free();
                        None
                    }
                    Err(e) => {
                        m.failed = true;
                        Some(Err(e))
                    }
                }
            }
        }
    }
}

/// Sorts a buffer of records by key; the result yields them in order.
fn sort_buffer<K: Ord + 'static, V: 'static>(mut buf: Vec<(K, V)>, ascending: bool) -> InOrder<K, V> {
    if is_byte_like::<K>() && buf.len() > 1 {
        return sort_by_prefix(buf, ascending);
    }
    if ascending {
        buf.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    } else {
        buf.sort_unstable_by(|a, b| b.0.cmp(&a.0));
    }
    InOrder::Moved(buf.into_iter())
}

/// Sorts byte-like keys through `(prefix, index)` pairs: most comparisons
/// are of two integers in one contiguous array, and only equal prefixes read
/// the keys themselves. The records stay where they are; [`InOrder`] hands
/// them out through the sorted indices.
fn sort_by_prefix<K: Ord + 'static, V: 'static>(buf: Vec<(K, V)>, ascending: bool) -> InOrder<K, V> {
    let mut order: Vec<(u64, usize)> =
        buf.iter().enumerate().map(|(i, r)| (sort_prefix(&r.0).unwrap_or(0), i)).collect();
    {
        let keys = &buf;
        let by_key = |a: &(u64, usize), b: &(u64, usize)| a.0.cmp(&b.0).then_with(|| keys[a.1].0.cmp(&keys[b.1].0));
        if ascending {
            order.sort_unstable_by(by_key);
        } else {
            order.sort_unstable_by(|a, b| by_key(b, a));
        }
    }
    // Same layout (the key's niche holds `None`), so this reuses the buffer.
    let recs = buf.into_iter().map(Some).collect();
    InOrder::Indexed { recs, order, pos: 0 }
}

/// How far ahead of the consumer [`InOrder::Indexed`] prefetches a record's
/// slot, and (later, once the slot is cached) the heap bytes it points to.
const PREFETCH_SLOT_AHEAD: usize = 16;
const PREFETCH_HEAP_AHEAD: usize = 8;

/// A sorted buffer's records in key order.
enum InOrder<K, V> {
    /// Sorted in place.
    Moved(std::vec::IntoIter<(K, V)>),
    /// Records in arrival order and their positions in key order. In key
    /// order every record is a cache miss somewhere in the buffer (and its
    /// byte keys and values more misses elsewhere on the heap); prefetching
    /// a few records ahead overlaps those misses with the consumer's work
    /// instead of stalling on each in turn.
    Indexed { recs: Vec<Option<(K, V)>>, order: Vec<(u64, usize)>, pos: usize },
    /// Still encoded, decoded as handed out ([`crate::byte_sort`]).
    Encoded(EncodedRun<K, V>),
}

impl<K: 'static, V: 'static> Iterator for InOrder<K, V> {
    type Item = (K, V);

    #[inline]
    fn next(&mut self) -> Option<(K, V)> {
        match self {
            InOrder::Moved(it) => it.next(),
            InOrder::Indexed { recs, order, pos } => {
                let &(_, at) = order.get(*pos)?;
                if let Some(&(_, ahead)) = order.get(*pos + PREFETCH_SLOT_AHEAD) {
                    prefetch(&recs[ahead]);
                }
                if let Some(&(_, ahead)) = order.get(*pos + PREFETCH_HEAP_AHEAD) {
                    if let Some((k, v)) = &recs[ahead] {
                        prefetch_heap(k);
                        prefetch_heap(v);
                    }
                }
                *pos += 1;
                recs[at].take()
            }
            InOrder::Encoded(run) => run.next(),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = match self {
            InOrder::Moved(it) => it.len(),
            InOrder::Indexed { order, pos, .. } => order.len() - *pos,
            InOrder::Encoded(run) => return run.size_hint(),
        };
        (n, Some(n))
    }
}

/// Sorts records by key (ascending or descending), spilling sorted runs to
/// `spill_dir` when `mem` is refused and k-way merging them. Not stable for
/// equal keys. Ownership of memory and spill files as for [`combine_by_key`].
pub fn sort_by_key<K, V, I>(
    records: I,
    ascending: bool,
    mem: &mut MemoryReservation,
    spill_dir: &Path,
    cfg: &WriteConfig,
) -> Result<SortedIter<K, V>>
where
    K: Ord + Serialize + DeserializeOwned + 'static,
    V: Serialize + DeserializeOwned + 'static,
    I: RecordInput<(K, V)>,
{
    let res = sort_inner(records, ascending, mem, spill_dir, cfg);
    if res.is_err() {
        mem.free();
    }
    res
}

fn sort_inner<K, V, I>(
    records: I,
    ascending: bool,
    mem: &mut MemoryReservation,
    spill_dir: &Path,
    cfg: &WriteConfig,
) -> Result<SortedIter<K, V>>
where
    K: Ord + Serialize + DeserializeOwned + 'static,
    V: Serialize + DeserializeOwned + 'static,
    I: RecordInput<(K, V)>,
{
    let mut buf: Vec<(K, V)> = Vec::new();
    let mut est = SizeEstimator::default();
    let mut runs: Vec<(SpillFile, u64)> = Vec::new();
    let mut bytes_spilled = 0u64;
    // The prefix sort's `(prefix, index)` per record, held until the buffer is consumed.
    let index_bytes = if is_byte_like::<K>() { std::mem::size_of::<(u64, usize)>() } else { 0 };
    {
        let mut env = env(cfg, mem, spill_dir);
        let mut records = records;
        while let Some((k, v)) = records.next_record()? {
            if est.should_sample() {
                est.record(encoded_size(&(&k, &v)));
            }
            buf.push((k, v));
            let needed = buf.capacity() * std::mem::size_of::<(K, V)>() + buf.len() * (est.per_entry() + index_bytes);
            if !ensure_reserved(env.mem, needed, env.chunk) {
                bytes_spilled += spill_sorted_run(&mut env, &mut runs, |bw, w| {
                    for (k, v) in sort_buffer(std::mem::take(&mut buf), ascending) {
                        bw.write_record(&k, &v, w)?;
                    }
                    Ok(())
                })?;
            }
        }
    }
    let sorted = sort_buffer(buf, ascending);
    finish_sort(sorted, runs, ascending, mem, bytes_spilled)
}

/// Writes one sorted run (`write` puts its records) to a new spill file as
/// one segment, adds it to `runs` and releases the reservation the run
/// held; returns the bytes written.
fn spill_sorted_run(
    env: &mut SpillEnv<'_>,
    runs: &mut Vec<(SpillFile, u64)>,
    write: impl FnOnce(&mut BlockWriter, &mut BufWriter<File>) -> Result<()>,
) -> Result<u64> {
    let (file, f) = SpillFile::create(env.dir)?;
    let mut w = BufWriter::with_capacity(IO_BUFFER, f);
    let mut bw = BlockWriter::new(env.block_size, env.compress);
    write(&mut bw, &mut w)?;
    bw.finish_segment(&mut w)?;
    finish_writer(w, file.path())?;
    tracing::debug!(path = %file.path().display(), records = bw.records_written(), bytes = bw.bytes_written(), "spilled sorted run");
    runs.push((file, bw.records_written()));
    env.mem.free();
    Ok(bw.bytes_written())
}

/// The iterator over a sort's in-memory remainder `sorted` and its spilled
/// runs, merged when there are any.
fn finish_sort<K, V>(
    sorted: InOrder<K, V>,
    runs: Vec<(SpillFile, u64)>,
    ascending: bool,
    mem: &mut MemoryReservation,
    bytes_spilled: u64,
) -> Result<SortedIter<K, V>>
where
    K: Ord + DeserializeOwned + 'static,
    V: DeserializeOwned + 'static,
{
    let spill_count = runs.len() as u32;
    if runs.is_empty() {
        return Ok(SortedIter {
            inner: SortedInner::Mem(sorted),
            _spills: Vec::new(),
            mem: mem.take(),
            spill_count,
            bytes_spilled,
        });
    }
    let mut sources: Vec<SortRun<K, V>> = Vec::with_capacity(runs.len() + 1);
    for (file, count) in &runs {
        let reader: BufReader<File> = file.open()?;
        let seg = SegmentReader::from_reader(reader).with_label(format!("spill file {}", file.path().display()));
        sources.push(Run::Spill(Counted::new(seg, *count)));
    }
    sources.push(Run::Mem(sorted));
    Ok(SortedIter {
        inner: SortedInner::Merge(SortMerge {
            heap: BinaryHeap::with_capacity(sources.len()),
            sources,
            ascending,
            started: false,
            failed: false,
        }),
        _spills: runs.into_iter().map(|(f, _)| f).collect(),
        mem: mem.take(),
        spill_count,
        bytes_spilled,
    })
}

/// Whether [`sort_segments_by_key`] takes records of these types: both key
/// and value byte-like (`Vec<u8>` or `String`).
pub fn sorts_segments<K: 'static, V: 'static>() -> bool {
    sorts_encoded::<K, V>()
}

/// [`sort_by_key`] for records whose key and value are both byte-like,
/// reading map-output segments (`(map index, segment bytes)`) directly and
/// keeping records encoded until they are handed out ([`crate::byte_sort`]).
/// A segment that fails validation is reported to `on_bad_segment` with its
/// map index before the error is returned. Also returns the records read.
/// Panics unless [`sorts_segments`] holds for `K` and `V`.
pub fn sort_segments_by_key<K, V, S>(
    segments: S,
    on_bad_segment: &mut dyn FnMut(usize, &Error),
    ascending: bool,
    mem: &mut MemoryReservation,
    spill_dir: &Path,
    cfg: &WriteConfig,
) -> Result<(SortedIter<K, V>, u64)>
where
    K: Ord + DeserializeOwned + 'static,
    V: DeserializeOwned + 'static,
    S: Iterator<Item = (usize, Vec<u8>)>,
{
    assert!(sorts_encoded::<K, V>(), "sort_segments_by_key needs byte-like keys and values");
    // Run as a closure so that every early return passes the clean-up below.
    let res = (|| {
        let mut run = EncodedRun::<K, V>::new();
        let mut runs: Vec<(SpillFile, u64)> = Vec::new();
        let (mut bytes_spilled, mut records) = (0u64, 0u64);
        {
            let mut env = env(cfg, mem, spill_dir);
            for (map_index, bytes) in segments {
                let mut seg =
                    SegmentReader::<K, V>::new(bytes).with_label(format!("segment of map output {map_index}"));
                loop {
                    let block = match seg.next_block() {
                        Ok(Some(block)) => block,
                        Ok(None) => break,
                        Err(e) => {
                            on_bad_segment(map_index, &e);
                            return Err(e);
                        }
                    };
                    let before = run.len();
                    if let Err(msg) = run.push_block(block) {
                        let e = seg.block_error(msg);
                        on_bad_segment(map_index, &e);
                        return Err(e);
                    }
                    records += (run.len() - before) as u64;
                    if !ensure_reserved(env.mem, run.memory(), env.chunk) {
                        run.sort(ascending);
                        bytes_spilled += spill_sorted_run(&mut env, &mut runs, |bw, w| run.write_to(bw, w).map(drop))?;
                    }
                }
            }
        }
        run.sort(ascending);
        let sorted = finish_sort(InOrder::Encoded(run), runs, ascending, mem, bytes_spilled)?;
        Ok((sorted, records))
    })();
    if res.is_err() {
        mem.free();
    }
    res
}
