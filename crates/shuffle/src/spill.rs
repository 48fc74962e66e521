//! Machinery shared by every spilling operator (map-side writers and
//! reduce-side combine/sort): temporary-file guards, atomic publication of
//! output files, memory-size estimation, and the spillable combining hash map
//! with its hash-ordered k-way merge.
//!
//! It lives in one place so that the map-side combine ([`crate::write_combined`])
//! and the reduce-side [`crate::combine_by_key`] use exactly the same
//! spill format and merge logic.
//!
//! A combine spill file is a sequence of blocks (see [`crate::format`])
//! holding, for partitions `0..n` in order, that partition's `(K, C)` records
//! sorted by [`key_hash`]; the number of records per partition is kept in
//! memory ([`SpilledRun::records`]) so the file is read back as one
//! sequential stream, `records[p]` records at a time.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::{self, File, OpenOptions};
use std::hash::Hash;
use std::io::{self, BufReader, BufWriter, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::aggregator::{key_hash, Aggregator};
use crate::error::{io_ctx, Error, Result};
use crate::format::{BlockWriter, SegmentReader};
use crate::input::RecordInput;
use crate::memory::{ensure_reserved, MemoryReservation};
use crate::table::{CombineTable, Drain, MAX_BATCH};

/// Buffer size for spill and output file I/O.
pub(crate) const IO_BUFFER: usize = 256 * 1024;

static FILE_COUNTER: AtomicU64 = AtomicU64::new(0);

fn unique_suffix() -> String {
    let n = FILE_COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{}-{n}-{nanos:08x}", std::process::id())
}

/// A temporary spill file that is deleted when dropped (success, error or panic).
#[derive(Debug)]
pub(crate) struct SpillFile {
    path: PathBuf,
}

impl SpillFile {
    /// Creates a new, uniquely named, empty spill file in `dir` (created if missing).
    pub(crate) fn create(dir: &Path) -> Result<(SpillFile, File)> {
        fs::create_dir_all(dir).map_err(io_ctx(format!("creating spill directory {}", dir.display())))?;
        loop {
            let path = dir.join(format!("ember-spill-{}.tmp", unique_suffix()));
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => return Ok((SpillFile { path }, file)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io(format!("creating spill file {}", path.display()), e)),
            }
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the file for buffered sequential reading.
    pub(crate) fn open(&self) -> Result<BufReader<File>> {
        let f = File::open(&self.path).map_err(io_ctx(format!("opening spill file {}", self.path.display())))?;
        Ok(BufReader::with_capacity(IO_BUFFER, f))
    }
}

impl Drop for SpillFile {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_file(&self.path) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(path = %self.path.display(), error = %e, "could not delete spill file");
            }
        }
    }
}

/// An output file written under a temporary name and renamed into place by
/// [`TempOutput::commit`]; deleted on drop if never committed.
#[derive(Debug)]
pub(crate) struct TempOutput {
    tmp: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl TempOutput {
    pub(crate) fn create(target: &Path) -> Result<(TempOutput, File)> {
        let mut name = target.file_name().map(|n| n.to_os_string()).unwrap_or_default();
        name.push(format!(".tmp-{}", unique_suffix()));
        let tmp = target.with_file_name(name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io_ctx(format!("creating {}", tmp.display())))?;
        Ok((TempOutput { tmp, target: target.to_path_buf(), committed: false }, file))
    }

    /// Atomically renames the temporary file to its final name.
    pub(crate) fn commit(mut self) -> Result<()> {
        fs::rename(&self.tmp, &self.target).map_err(io_ctx(format!(
            "renaming {} to {}",
            self.tmp.display(),
            self.target.display()
        )))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for TempOutput {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Finishes a buffered file writer, surfacing flush errors.
pub(crate) fn finish_writer(w: BufWriter<File>, what: &Path) -> Result<File> {
    w.into_inner().map_err(|e| Error::io(format!("flushing {}", what.display()), e.into_error()))
}

/// Cheap running estimate of the heap bytes owned by buffered entries,
/// based on the postcard-encoded size of sampled entries.
#[derive(Debug, Default)]
pub(crate) struct SizeEstimator {
    avg: f64,
    /// `avg` rounded up, refreshed when a sample is recorded: it is read on
    /// every insert, and rounding a float (a libm call) per record showed up
    /// in instruction profiles.
    per_entry: usize,
    samples: u64,
    seen: u64,
}

impl SizeEstimator {
    /// Whether the current entry should be measured: the first 16 entries,
    /// then every 32nd.
    #[inline]
    pub(crate) fn should_sample(&mut self) -> bool {
        self.seen += 1;
        self.seen <= 16 || self.seen.is_multiple_of(32)
    }

    /// Records a measured entry size.
    pub(crate) fn record(&mut self, bytes: usize) {
        let b = bytes as f64;
        self.samples += 1;
        if self.samples <= 16 {
            self.avg += (b - self.avg) / self.samples as f64;
        } else {
            // Exponential moving average so that growing combiners are tracked.
            self.avg += (b - self.avg) / 16.0;
        }
        self.per_entry = self.avg.ceil() as usize;
    }

    /// Estimated heap bytes per entry.
    #[inline]
    pub(crate) fn per_entry(&self) -> usize {
        self.per_entry
    }
}

/// Encoded size of a value, for sampling (0 if it does not serialize).
pub(crate) fn encoded_size<T: Serialize + ?Sized>(v: &T) -> usize {
    postcard::serialize_with_flavor::<T, _, usize>(v, postcard::ser_flavors::Size::default()).unwrap_or(0)
}

/// Where and how a spilling operator writes its runs.
pub(crate) struct SpillEnv<'a> {
    pub mem: &'a mut MemoryReservation,
    pub dir: &'a Path,
    pub block_size: usize,
    pub compress: bool,
    pub chunk: usize,
}

/// One spill file of a [`Combiner`], with its per-partition record counts.
#[derive(Debug)]
pub(crate) struct SpilledRun {
    pub file: SpillFile,
    pub records: Vec<u64>,
}

impl SpilledRun {
    pub(crate) fn reader<K, C>(&self) -> Result<SegmentReader<K, C>> {
        Ok(SegmentReader::from_reader(self.file.open()?)
            .with_label(format!("spill file {}", self.file.path().display())))
    }
}

/// A hash-map entry drained for spilling/merging: (partition, key_hash, key, combiner).
pub(crate) type Entry<K, C> = (u32, u64, K, C);

/// Strips partition and hash from a drained entry.
pub(crate) type StripFn<K, C> = fn(Entry<K, C>) -> (K, C);

pub(crate) fn strip<K, C>(e: Entry<K, C>) -> (K, C) {
    (e.2, e.3)
}

fn check_partition(p: usize, n: usize) -> Result<u32> {
    if p < n {
        Ok(p as u32)
    } else {
        Err(Error::InvalidArgument(format!("partitioner returned {p} for a shuffle with {n} partitions")))
    }
}

/// Feeds `records` to `f` in batches of up to [`MAX_BATCH`] records (`f`
/// must empty the batch). Pulling a batch first and then inserting it back
/// to back separates producing records (decoding, iterator layers) from the
/// hash table's cache misses, which [`CombineTable`] overlaps by
/// prefetching across the batch. Measured on groupByKey's reduce side (3.1 M
/// records into 62,500 keys), batching alone was 2-3x faster than one record
/// at a time.
pub(crate) fn for_each_batch<K, V, I, F>(mut records: I, mut f: F) -> Result<()>
where
    I: RecordInput<(K, V)>,
    F: FnMut(&mut Vec<(K, V)>) -> Result<()>,
{
    let mut batch: Vec<(K, V)> = Vec::with_capacity(MAX_BATCH);
    loop {
        records.next_batch(&mut batch, MAX_BATCH)?;
        if batch.is_empty() {
            return Ok(());
        }
        f(&mut batch)?;
        debug_assert!(batch.is_empty(), "batch not consumed");
        batch.clear();
    }
}

/// The spillable combining buffer: a [`CombineTable`] from key to combiner,
/// spilled to sorted runs when its memory reservation is refused.
pub(crate) struct Combiner<K, C> {
    table: CombineTable<K, C>,
    est: SizeEstimator,
    num_partitions: usize,
    pub spills: Vec<SpilledRun>,
    pub bytes_spilled: u64,
}

/// The most keys a combiner's table is sized for up front.
const MAX_EXPECTED_KEYS: usize = 1 << 20;

impl<K, C> Combiner<K, C>
where
    K: Hash + Eq + Serialize + DeserializeOwned + 'static,
    C: Serialize + DeserializeOwned + 'static,
{
    /// `expected_keys` sizes the table up front (capped, so a wrong guess
    /// costs little memory).
    pub(crate) fn new(num_partitions: usize, expected_keys: usize) -> Self {
        let mut table = CombineTable::new();
        table.reserve(expected_keys.min(MAX_EXPECTED_KEYS));
        Combiner { table, est: SizeEstimator::default(), num_partitions, spills: Vec::new(), bytes_spilled: 0 }
    }

    /// Distinct keys held in memory.
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    fn estimated_bytes(&self) -> usize {
        self.table.allocated_bytes() + self.table.len() * self.est.per_entry()
    }

    /// Adds a batch of values (leaving `batch` empty), then spills if the
    /// reservation cannot cover the buffer.
    pub(crate) fn insert_batch<V, A, P>(
        &mut self,
        batch: &mut Vec<(K, V)>,
        agg: &A,
        partition_of: &P,
        env: &mut SpillEnv<'_>,
    ) -> Result<()>
    where
        A: Aggregator<K, V, C>,
        P: Fn(&K) -> usize,
    {
        let est = &mut self.est;
        self.table.upsert_batch(
            batch,
            |v| agg.create_combiner(v),
            |c, v| agg.merge_value(c, v),
            |k, c| {
                if est.should_sample() {
                    est.record(encoded_size(k) + encoded_size(c));
                }
            },
        );
        if !ensure_reserved(env.mem, self.estimated_bytes(), env.chunk) {
            self.spill(partition_of, env)?;
        }
        Ok(())
    }

    /// Drains the map into entries sorted by partition, and by key hash
    /// within a partition if `by_hash`.
    pub(crate) fn drain_sorted<P: Fn(&K) -> usize>(
        &mut self,
        partition_of: &P,
        by_hash: bool,
    ) -> Result<Vec<Entry<K, C>>> {
        let mut entries = Vec::with_capacity(self.table.len());
        for (k, c) in self.table.drain() {
            let p = check_partition(partition_of(&k), self.num_partitions)?;
            let h = if by_hash { key_hash(&k) } else { 0 };
            entries.push((p, h, k, c));
        }
        if by_hash {
            entries.sort_unstable_by_key(|e| (e.0, e.1));
        } else if self.num_partitions > 1 {
            entries.sort_unstable_by_key(|e| e.0);
        }
        Ok(entries)
    }

    /// Writes the buffered combiners to a new spill file and releases the memory.
    pub(crate) fn spill<P: Fn(&K) -> usize>(&mut self, partition_of: &P, env: &mut SpillEnv<'_>) -> Result<()> {
        if self.table.is_empty() {
            env.mem.free();
            return Ok(());
        }
        let entries = self.drain_sorted(partition_of, true)?;
        let (file, f) = SpillFile::create(env.dir)?;
        let mut w = BufWriter::with_capacity(IO_BUFFER, f);
        let mut bw = BlockWriter::new(env.block_size, env.compress);
        let mut records = vec![0u64; self.num_partitions];
        for (p, _, k, c) in entries {
            bw.write_record(&k, &c, &mut w)?;
            records[p as usize] += 1;
        }
        bw.finish_segment(&mut w)?;
        finish_writer(w, file.path())?;
        tracing::debug!(
            path = %file.path().display(),
            records = bw.records_written(),
            bytes = bw.bytes_written(),
            reserved = env.mem.size(),
            "spilled combiner map"
        );
        self.bytes_spilled += bw.bytes_written();
        self.spills.push(SpilledRun { file, records });
        env.mem.free();
        Ok(())
    }

    /// Consumes the combiner, giving its in-memory entries.
    pub(crate) fn into_entries(mut self) -> Drain<K, C> {
        self.table.drain()
    }
}

/// Reads exactly `remaining` records from a spilled run; a run that ends
/// early is reported as corrupt.
pub(crate) struct Counted<R> {
    inner: R,
    remaining: u64,
}

impl<R> Counted<R> {
    pub(crate) fn new(inner: R, remaining: u64) -> Self {
        Counted { inner, remaining }
    }
}

impl<T, R: Iterator<Item = Result<T>>> Iterator for Counted<R> {
    type Item = Result<T>;

    fn next(&mut self) -> Option<Result<T>> {
        if self.remaining == 0 {
            return None;
        }
        match self.inner.next() {
            Some(Ok(x)) => {
                self.remaining -= 1;
                Some(Ok(x))
            }
            Some(Err(e)) => {
                self.remaining = 0;
                Some(Err(e))
            }
            None => {
                let missing = std::mem::take(&mut self.remaining);
                Some(Err(Error::corrupt(format!("spilled run ended {missing} records early"))))
            }
        }
    }
}

/// One input of a merge: the in-memory run or a spilled run.
pub(crate) enum Run<M, S> {
    Mem(M),
    Spill(S),
}

impl<T, M, S> Iterator for Run<M, S>
where
    M: Iterator<Item = T>,
    S: Iterator<Item = Result<T>>,
{
    type Item = Result<T>;

    #[inline]
    fn next(&mut self) -> Option<Result<T>> {
        match self {
            Run::Mem(m) => m.next().map(Ok),
            Run::Spill(s) => s.next(),
        }
    }
}

/// K-way merge of runs sorted by [`key_hash`], combining records with equal
/// keys via `merge_combiners`: each key is emitted once. Records sharing a
/// hash are collected into a small group and compared with `==`.
pub(crate) struct HashMerge<K, V, C, A, S> {
    sources: Vec<S>,
    heads: Vec<Option<(K, C)>>,
    heap: BinaryHeap<Reverse<(u64, usize)>>,
    group: Vec<(K, C)>,
    agg: A,
    started: bool,
    failed: bool,
    _v: PhantomData<fn(V)>,
}

impl<K, V, C, A, S> HashMerge<K, V, C, A, S>
where
    K: Hash + Eq,
    A: Aggregator<K, V, C>,
    S: Iterator<Item = Result<(K, C)>>,
{
    pub(crate) fn new(sources: Vec<S>, agg: A) -> Self {
        let n = sources.len();
        HashMerge {
            heads: (0..n).map(|_| None).collect(),
            heap: BinaryHeap::with_capacity(n),
            sources,
            group: Vec::new(),
            agg,
            started: false,
            failed: false,
            _v: PhantomData,
        }
    }

    fn advance(&mut self, i: usize) -> Result<()> {
        match self.sources[i].next() {
            Some(Ok((k, c))) => {
                let h = key_hash(&k);
                self.heads[i] = Some((k, c));
                self.heap.push(Reverse((h, i)));
                Ok(())
            }
            Some(Err(e)) => Err(e),
            None => Ok(()),
        }
    }

    fn take_head(&mut self, i: usize) -> Result<()> {
        if let Some((k, c)) = self.heads[i].take() {
            match self.group.iter().position(|(gk, _)| *gk == k) {
                Some(pos) => {
                    let (gk, gc) = self.group.swap_remove(pos);
                    let merged = self.agg.merge_combiners(gc, c);
                    self.group.push((gk, merged));
                }
                None => self.group.push((k, c)),
            }
        }
        self.advance(i)
    }

    fn fill_group(&mut self) -> Result<()> {
        if !self.started {
            self.started = true;
            for i in 0..self.sources.len() {
                self.advance(i)?;
            }
        }
        let Some(Reverse((h, i))) = self.heap.pop() else {
            return Ok(());
        };
        self.take_head(i)?;
        while let Some(&Reverse((h2, j))) = self.heap.peek() {
            if h2 != h {
                break;
            }
            self.heap.pop();
            self.take_head(j)?;
        }
        Ok(())
    }
}

impl<K, V, C, A, S> Iterator for HashMerge<K, V, C, A, S>
where
    K: Hash + Eq,
    A: Aggregator<K, V, C>,
    S: Iterator<Item = Result<(K, C)>>,
{
    type Item = Result<(K, C)>;

    fn next(&mut self) -> Option<Result<(K, C)>> {
        if let Some(x) = self.group.pop() {
            return Some(Ok(x));
        }
        if self.failed {
            return None;
        }
        if let Err(e) = self.fill_group() {
            self.failed = true;
            self.group.clear();
            return Some(Err(e));
        }
        self.group.pop().map(Ok)
    }
}

/// Writes the combiner's content (spills merged with the in-memory map), one
/// segment per partition, with each key at most once per partition. Returns
/// the segment lengths.
pub(crate) fn write_combined_output<K, V, C, A, P, W>(
    comb: &mut Combiner<K, C>,
    agg: &A,
    partition_of: &P,
    bw: &mut BlockWriter,
    out: &mut W,
) -> Result<Vec<u64>>
where
    K: Hash + Eq + Serialize + DeserializeOwned + 'static,
    C: Serialize + DeserializeOwned + 'static,
    A: Aggregator<K, V, C>,
    P: Fn(&K) -> usize,
    W: Write,
{
    let n = comb.num_partitions;
    let mut lengths = vec![0u64; n];
    let by_hash = !comb.spills.is_empty();
    let entries = comb.drain_sorted(partition_of, by_hash)?;
    let mut mem_counts = vec![0usize; n];
    for e in &entries {
        mem_counts[e.0 as usize] += 1;
    }
    let mut mem_iter = entries.into_iter();
    if !by_hash {
        // Fast path: nothing spilled, the map already holds each key once.
        for (p, len) in lengths.iter_mut().enumerate() {
            for (_, _, k, c) in (&mut mem_iter).take(mem_counts[p]) {
                bw.write_record(&k, &c, out)?;
            }
            *len = bw.finish_segment(out)?;
        }
        return Ok(lengths);
    }
    let mut readers = comb.spills.iter().map(|s| s.reader::<K, C>()).collect::<Result<Vec<_>>>()?;
    for (p, len) in lengths.iter_mut().enumerate() {
        let mut sources = Vec::with_capacity(readers.len() + 1);
        for (run, reader) in comb.spills.iter().zip(readers.iter_mut()) {
            sources.push(Run::Spill(Counted::new(reader, run.records[p])));
        }
        let strip: StripFn<K, C> = strip;
        sources.push(Run::Mem((&mut mem_iter).take(mem_counts[p]).map(strip)));
        for rec in HashMerge::<K, V, C, &A, _>::new(sources, agg) {
            let (k, c) = rec?;
            bw.write_record(&k, &c, out)?;
        }
        *len = bw.finish_segment(out)?;
    }
    Ok(lengths)
}
