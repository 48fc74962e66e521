//! Property tests of the map-side writers and reduce-side operators against
//! in-memory oracles, under tiny (spilling) and huge memory limits.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::Arc;

use ember_shuffle::format::trailer_len;
use ember_shuffle::{
    combine_by_key, key_hash, merge_combiners_by_key, read_index, read_segment, sort_by_key, sort_segments_by_key,
    write_combined, write_plain, Aggregator, Error, FnAggregator, MemoryPool, SegmentReader, WriteConfig,
};
use proptest::prelude::*;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

fn part_of<K: Hash>(n: usize) -> impl Fn(&K) -> usize {
    move |k| (key_hash(k).rotate_left(23) % n.max(1) as u64) as usize
}

struct Sum;
impl<K> Aggregator<K, u32, u64> for Sum {
    fn create_combiner(&self, v: u32) -> u64 {
        v as u64
    }
    fn merge_value(&self, c: u64, v: u32) -> u64 {
        c + v as u64
    }
    fn merge_combiners(&self, a: u64, b: u64) -> u64 {
        a + b
    }
}

/// Small memory (forces spills) or effectively unlimited.
fn setup(tiny: bool, dir: &Path) -> (Arc<MemoryPool>, WriteConfig) {
    let mut cfg = WriteConfig::new(dir.join("spill"));
    if tiny {
        cfg.memory_chunk = 512;
        cfg.block_size = 256;
        (MemoryPool::new(4 * 1024), cfg)
    } else {
        (MemoryPool::new(1 << 30), cfg)
    }
}

fn spill_dir_is_empty(cfg: &WriteConfig) -> bool {
    match std::fs::read_dir(&cfg.spill_dir) {
        Ok(rd) => rd.count() == 0,
        Err(_) => true,
    }
}

fn read_partitions<K: DeserializeOwned + 'static, V: DeserializeOwned + 'static>(
    data: &Path,
    n: usize,
) -> Vec<Vec<(K, V)>> {
    let offsets = read_index(data).unwrap();
    assert_eq!(offsets.len(), n + 1);
    (0..n)
        .map(|p| {
            let seg = read_segment(data, p).unwrap();
            assert_eq!(seg.len() as u64, offsets[p + 1] - offsets[p]);
            SegmentReader::<K, V>::new(seg).collect::<Result<Vec<_>, _>>().unwrap()
        })
        .collect()
}

fn run_plain<K, V>(records: Vec<(K, V)>, n: usize, tiny: bool, compress: bool)
where
    K: Hash + Eq + Clone + Serialize + DeserializeOwned + std::fmt::Debug + 'static,
    V: Clone + Serialize + DeserializeOwned + PartialEq + std::fmt::Debug + 'static,
{
    let dir = tempfile::tempdir().unwrap();
    let (pool, mut cfg) = setup(tiny, dir.path());
    cfg.compress = compress;
    let data = dir.path().join("map.data");
    let mut mem = pool.reservation();
    let info =
        write_plain(records.clone().into_iter().map(Ok::<_, Infallible>), n, part_of::<K>(n), &mut mem, &cfg, &data)
            .unwrap();
    assert_eq!(mem.size(), 0);
    drop(mem);
    assert_eq!(pool.used(), 0);
    assert!(spill_dir_is_empty(&cfg));
    assert_eq!(info.records_written, records.len() as u64);
    assert_eq!(info.bytes_written + trailer_len(n as u32), std::fs::metadata(&data).unwrap().len());
    assert_eq!(info.partition_lengths.len(), n);
    // Buffered blocks are compressed, so only output larger than the pool
    // proves that spilling must have happened.
    if tiny && info.bytes_written > 4096 {
        assert!(info.spill_count > 0, "expected spills: {info:?}");
    }
    let parts: Vec<Vec<(K, V)>> = read_partitions(&data, n);
    let pf = part_of::<K>(n);
    for (p, part) in parts.iter().enumerate() {
        // Exactly the records of partition p, in arrival order.
        let expected: Vec<(K, V)> = records.iter().filter(|(k, _)| pf(k) == p).cloned().collect();
        assert_eq!(part.len(), expected.len());
        for (a, b) in part.iter().zip(&expected) {
            assert!(a.0 == b.0 && a.1 == b.1, "{a:?} != {b:?}");
        }
    }
    // Only the published file remains next to the spill directory.
    let names: HashSet<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "spill")
        .collect();
    assert_eq!(names, HashSet::from(["map.data".into()]));
}

fn run_combined<K>(records: Vec<(K, u32)>, n: usize, tiny: bool) -> Vec<u8>
where
    K: Hash + Eq + Clone + Ord + Serialize + DeserializeOwned + std::fmt::Debug + 'static,
{
    let dir = tempfile::tempdir().unwrap();
    let (pool, mut cfg) = setup(tiny, dir.path());
    // Some runs size the table up front (as a later task of a stage does).
    cfg.expected_keys = if records.len().is_multiple_of(3) { 0 } else { records.len() / 2 };
    let data = dir.path().join("map.data");
    let mut mem = pool.reservation();
    let info = write_combined(
        records.clone().into_iter().map(Ok::<_, Infallible>),
        n,
        part_of::<K>(n),
        &Sum,
        &mut mem,
        &cfg,
        &data,
    )
    .unwrap();
    drop(mem);
    assert_eq!(pool.used(), 0);
    assert!(spill_dir_is_empty(&cfg));
    let mut oracle: HashMap<K, u64> = HashMap::new();
    for (k, v) in &records {
        *oracle.entry(k.clone()).or_default() += *v as u64;
    }
    if tiny && oracle.len() >= 400 {
        assert!(info.spill_count > 0, "expected spills: {info:?}");
    }
    assert_eq!(info.records_written, oracle.len() as u64);
    let parts: Vec<Vec<(K, u64)>> = read_partitions(&data, n);
    let pf = part_of::<K>(n);
    let mut seen: HashMap<K, u64> = HashMap::new();
    for (p, part) in parts.into_iter().enumerate() {
        for (k, c) in part {
            assert_eq!(pf(&k), p, "key {k:?} in wrong partition");
            assert!(seen.insert(k.clone(), c).is_none(), "key {k:?} twice");
        }
    }
    assert_eq!(seen, oracle);
    std::fs::read(&data).unwrap()
}

fn u32_records(keys_small: bool) -> impl Strategy<Value = Vec<(u32, u32)>> {
    let key = if keys_small { 0u32..20 } else { 0u32..u32::MAX };
    proptest::collection::vec((key, 0u32..1000), 0..1500)
}

fn string_records() -> impl Strategy<Value = Vec<(String, u32)>> {
    proptest::collection::vec(("[a-z]{1,12}", 0u32..1000), 0..1200)
}

fn num_partitions(len: usize) -> impl Strategy<Value = usize> {
    // Zero partitions only for empty inputs.
    if len == 0 {
        (0usize..8).boxed()
    } else {
        (1usize..8).boxed()
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 24,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn plain_u32(
        (records, n) in any::<bool>().prop_flat_map(u32_records)
            .prop_flat_map(|r| { let l = r.len(); (Just(r), num_partitions(l)) }),
        tiny in any::<bool>(),
        compress in any::<bool>(),
    ) {
        run_plain(records, n, tiny, compress);
    }

    #[test]
    fn plain_strings(
        (records, n) in string_records()
            .prop_flat_map(|r| { let l = r.len(); (Just(r), num_partitions(l)) }),
        tiny in any::<bool>(),
    ) {
        run_plain(records, n, tiny, true);
    }

    #[test]
    fn combined_u32(
        (records, n) in any::<bool>().prop_flat_map(u32_records)
            .prop_flat_map(|r| { let l = r.len(); (Just(r), num_partitions(l)) }),
        tiny in any::<bool>(),
    ) {
        let a = run_combined(records.clone(), n, tiny);
        // Deterministic output for the same input and configuration.
        let b = run_combined(records, n, tiny);
        prop_assert_eq!(a, b);
    }

    #[test]
    fn combined_strings(
        (records, n) in string_records()
            .prop_flat_map(|r| { let l = r.len(); (Just(r), num_partitions(l)) }),
        tiny in any::<bool>(),
    ) {
        run_combined(records, n, tiny);
    }

    #[test]
    fn reduce_combine_by_key(
        records in proptest::collection::vec(("[a-z]{1,3}|[a-z]{8,16}", 0u32..1000), 0..2000),
        tiny in any::<bool>(),
        expected_keys in prop_oneof![Just(0usize), 0usize..3000],
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (pool, mut cfg) = setup(tiny, dir.path());
        // A table sized up front, right or wrong, changes nothing but speed.
        cfg.expected_keys = expected_keys;
        let mut mem = pool.reservation();
        let iter = combine_by_key(
            records.clone().into_iter().map(Ok::<_, Error>),
            Sum,
            &mut mem,
            &cfg.spill_dir,
            &cfg,
        )
        .unwrap();
        let mut oracle: HashMap<String, u64> = HashMap::new();
        for (k, v) in &records {
            *oracle.entry(k.clone()).or_default() += *v as u64;
        }
        if tiny && oracle.len() >= 400 {
            prop_assert!(iter.spill_count() > 0);
        }
        if iter.spill_count() == 0 {
            prop_assert_eq!(iter.keys(), Some(oracle.len()));
        } else {
            prop_assert_eq!(iter.keys(), None);
        }
        let mut got = HashMap::new();
        for r in iter {
            let (k, c) = r.unwrap();
            prop_assert!(got.insert(k, c).is_none());
        }
        prop_assert_eq!(got, oracle);
        drop(mem);
        prop_assert_eq!(pool.used(), 0);
        prop_assert!(spill_dir_is_empty(&cfg));
    }

    #[test]
    fn reduce_group_by_key_growing_combiners(
        records in proptest::collection::vec((0u32..50, 0u32..1000), 0..2000),
        tiny in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (pool, cfg) = setup(tiny, dir.path());
        let mut mem = pool.reservation();
        let group = FnAggregator::new(
            |v: u32| vec![v],
            |mut c: Vec<u32>, v| { c.push(v); c },
            |mut a: Vec<u32>, b: Vec<u32>| { a.extend(b); a },
        );
        let iter = combine_by_key(
            records.clone().into_iter().map(Ok::<_, Infallible>),
            &group,
            &mut mem,
            &cfg.spill_dir,
            &cfg,
        )
        .unwrap();
        let mut oracle: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for (k, v) in &records {
            oracle.entry(*k).or_default().push(*v);
        }
        let mut got = BTreeMap::new();
        for r in iter {
            let (k, mut c) = r.unwrap();
            c.sort_unstable();
            prop_assert!(got.insert(k, c).is_none());
        }
        for v in oracle.values_mut() {
            v.sort_unstable();
        }
        prop_assert_eq!(got, oracle);
        drop(mem);
        prop_assert_eq!(pool.used(), 0);
        prop_assert!(spill_dir_is_empty(&cfg));
    }

    #[test]
    fn reduce_merge_combiners(
        records in proptest::collection::vec((0u32..2000, 0u64..1_000_000), 0..2000),
        tiny in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (pool, cfg) = setup(tiny, dir.path());
        let mut mem = pool.reservation();
        let iter = merge_combiners_by_key(
            records.clone().into_iter().map(Ok::<_, Infallible>),
            Arc::new(Sum),
            &mut mem,
            &cfg.spill_dir,
            &cfg,
        )
        .unwrap();
        let mut oracle: HashMap<u32, u64> = HashMap::new();
        for (k, v) in &records {
            *oracle.entry(*k).or_default() += *v;
        }
        let got: HashMap<u32, u64> = iter.map(|r| r.unwrap()).collect();
        prop_assert_eq!(got, oracle);
        drop(mem);
        prop_assert_eq!(pool.used(), 0);
        prop_assert!(spill_dir_is_empty(&cfg));
    }

    #[test]
    fn reduce_sort_by_key(
        records in proptest::collection::vec(("[a-z]{0,10}", any::<u32>()), 0..2000),
        ascending in any::<bool>(),
        tiny in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (pool, cfg) = setup(tiny, dir.path());
        let mut mem = pool.reservation();
        let iter = sort_by_key(
            records.clone().into_iter().map(Ok::<_, Infallible>),
            ascending,
            &mut mem,
            &cfg.spill_dir,
            &cfg,
        )
        .unwrap();
        check_sorted_iter(iter, records, ascending, tiny, mem, &pool, &cfg)?;
    }

    /// Byte-vector keys take the prefix sort and the byte codec: keys share
    /// long prefixes (small alphabet, up to 12 bytes) so ties past the 8-byte
    /// prefix are common; values are byte vectors too.
    #[test]
    fn reduce_sort_by_byte_keys(
        records in proptest::collection::vec(
            (proptest::collection::vec(0u8..3, 0..12), proptest::collection::vec(any::<u8>(), 0..20)),
            0..1500,
        ),
        ascending in any::<bool>(),
        tiny in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (pool, cfg) = setup(tiny, dir.path());
        let mut mem = pool.reservation();
        let iter = sort_by_key(records.clone().into_iter().map(Ok::<_, Infallible>), ascending, &mut mem, &cfg.spill_dir, &cfg)
            .unwrap();
        check_sorted_iter(iter, records, ascending, tiny, mem, &pool, &cfg)?;
    }
}

/// `got` holds exactly `records`, keys ascending or descending.
fn assert_sorted_like<K, V>(got: Vec<(K, V)>, mut records: Vec<(K, V)>, ascending: bool) -> Result<(), TestCaseError>
where
    K: Clone + Ord + std::fmt::Debug,
    V: Ord + std::fmt::Debug,
{
    records.sort_by(|a, b| if ascending { a.0.cmp(&b.0) } else { b.0.cmp(&a.0) });
    let keys = |v: &[(K, V)]| v.iter().map(|r| r.0.clone()).collect::<Vec<_>>();
    prop_assert_eq!(keys(&got), keys(&records));
    let mut got = got;
    got.sort();
    records.sort();
    prop_assert_eq!(got, records);
    Ok(())
}

/// A sort's output against `records` ([`assert_sorted_like`]); with a tiny
/// pool and enough records it must have spilled; afterwards no memory is
/// reserved and no spill file is left.
fn check_sorted_iter<K, V>(
    iter: ember_shuffle::SortedIter<K, V>,
    records: Vec<(K, V)>,
    ascending: bool,
    tiny: bool,
    mem: ember_shuffle::MemoryReservation,
    pool: &MemoryPool,
    cfg: &WriteConfig,
) -> Result<(), TestCaseError>
where
    K: Clone + Ord + DeserializeOwned + std::fmt::Debug + 'static,
    V: Ord + DeserializeOwned + std::fmt::Debug + 'static,
{
    if tiny && records.len() >= 300 {
        prop_assert!(iter.spill_count() > 0);
    }
    // Equal keys may come in any order: only keys and the multiset are compared.
    assert_sorted_like(iter.map(|r| r.unwrap()).collect(), records, ascending)?;
    drop(mem);
    prop_assert_eq!(pool.used(), 0);
    prop_assert!(spill_dir_is_empty(cfg));
    Ok(())
}

/// Map outputs of `records` split over `maps` map tasks (one reduce
/// partition each), as `(map index, segment bytes)`, written with room to spare.
fn map_segments<K, V>(dir: &Path, records: &[(K, V)], maps: usize) -> Vec<(usize, Vec<u8>)>
where
    K: Clone + Serialize + 'static,
    V: Clone + Serialize + 'static,
{
    let pool = MemoryPool::new(1 << 30);
    let cfg = WriteConfig::new(dir.join("map-spill"));
    let chunk = records.len().div_ceil(maps).max(1);
    records
        .chunks(chunk)
        .enumerate()
        .map(|(i, c)| {
            let data = dir.join(format!("map-{i}.data"));
            let mut mem = pool.reservation();
            write_plain(c.iter().cloned().map(Ok::<_, Infallible>), 1, |_: &K| 0, &mut mem, &cfg, &data).unwrap();
            (i, read_segment(&data, 0).unwrap())
        })
        .collect()
}

/// Sorts segments with [`sort_segments_by_key`] and checks the result
/// against `records` sorted: keys in order, the same records, no memory or
/// spill files left behind.
fn check_segment_sort<K, V>(records: Vec<(K, V)>, maps: usize, ascending: bool, tiny: bool) -> Result<(), TestCaseError>
where
    K: Clone + Ord + Serialize + DeserializeOwned + std::fmt::Debug + 'static,
    V: Clone + Ord + Serialize + DeserializeOwned + std::fmt::Debug + 'static,
{
    let dir = tempfile::tempdir().unwrap();
    let segments = map_segments(dir.path(), &records, maps);
    let (pool, cfg) = setup(tiny, dir.path());
    let mut mem = pool.reservation();
    let mut bad = Vec::new();
    let (iter, n) = sort_segments_by_key::<K, V, _>(
        segments.into_iter(),
        &mut |i, _| bad.push(i),
        ascending,
        &mut mem,
        &cfg.spill_dir,
        &cfg,
    )
    .unwrap();
    prop_assert_eq!(n, records.len() as u64);
    prop_assert!(bad.is_empty());
    check_sorted_iter(iter, records, ascending, tiny, mem, &pool, &cfg)
}

proptest! {
    /// The encoded sort of byte keys and values (a terasort's records):
    /// keys share long prefixes so ties past the 8-byte prefix are common.
    #[test]
    fn reduce_sort_segments_by_byte_keys(
        records in proptest::collection::vec(
            (proptest::collection::vec(0u8..3, 0..12), proptest::collection::vec(any::<u8>(), 0..20)),
            0..1500,
        ),
        maps in 1usize..4,
        ascending in any::<bool>(),
        tiny in any::<bool>(),
    ) {
        check_segment_sort(records, maps, ascending, tiny)?;
    }

    #[test]
    fn reduce_sort_segments_by_string_keys(
        records in proptest::collection::vec(("[a-cé]{0,10}", "[a-z]{0,5}"), 0..1500),
        maps in 1usize..4,
        ascending in any::<bool>(),
        tiny in any::<bool>(),
    ) {
        check_segment_sort(records, maps, ascending, tiny)?;
    }
}

#[test]
fn a_damaged_segment_is_reported_with_its_map_index() {
    let dir = tempfile::tempdir().unwrap();
    let records: Vec<(Vec<u8>, Vec<u8>)> = (0..3000u32).map(|i| (i.to_be_bytes().to_vec(), vec![7; 30])).collect();
    let mut segments = map_segments(dir.path(), &records, 3);
    let seg = &mut segments[1].1;
    let mid = seg.len() / 2;
    seg[mid] ^= 0x5a;
    let (pool, cfg) = setup(false, dir.path());
    let mut mem = pool.reservation();
    let mut bad = Vec::new();
    let err = sort_segments_by_key::<Vec<u8>, Vec<u8>, _>(
        segments.into_iter(),
        &mut |i, _| bad.push(i),
        true,
        &mut mem,
        &cfg.spill_dir,
        &cfg,
    )
    .err()
    .expect("a damaged segment");
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("map output 1"), "{err}");
    assert_eq!(bad, vec![1]);
    drop(mem);
    assert_eq!(pool.used(), 0);
}

/// A key whose hash collides a lot, to exercise the merge's equal-hash groups.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Colliding(u32);
impl Hash for Colliding {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self.0 % 7).hash(state);
    }
}

#[test]
fn hash_collisions_are_combined_by_equality() {
    let records: Vec<(Colliding, u32)> = (0..5000u32).map(|i| (Colliding(i % 700), 1)).collect();
    for n in [1, 3] {
        run_combined(records.clone(), n, true);
    }
    let dir = tempfile::tempdir().unwrap();
    let (pool, cfg) = setup(true, dir.path());
    let mut mem = pool.reservation();
    let iter =
        combine_by_key(records.into_iter().map(Ok::<_, Infallible>), Sum, &mut mem, &cfg.spill_dir, &cfg).unwrap();
    assert!(iter.spill_count() > 0);
    let got: HashMap<u32, u64> = iter.map(|r| r.unwrap()).map(|(k, c)| (k.0, c)).collect();
    assert_eq!(got.len(), 700);
    assert!(got.values().all(|&c| c == 5000 / 700 || c == 5000 / 700 + 1));
    assert_eq!(got.values().sum::<u64>(), 5000);
}

#[test]
fn zero_partitions_give_a_valid_empty_output() {
    let dir = tempfile::tempdir().unwrap();
    let (pool, cfg) = setup(false, dir.path());
    let data = dir.path().join("d");
    let mut mem = pool.reservation();
    let info = write_plain(std::iter::empty::<Result<(u32, u32), Infallible>>(), 0, |_: &u32| 0, &mut mem, &cfg, &data)
        .unwrap();
    assert_eq!(info.partition_lengths, Vec::<u64>::new());
    assert_eq!(read_index(&data).unwrap(), vec![0]);
    assert_eq!(std::fs::metadata(&data).unwrap().len(), trailer_len(0));
    // A record with nowhere to go is an error, not a panic.
    let err = write_plain(
        [(1u32, 1u32)].into_iter().map(Ok::<_, Infallible>),
        0,
        |_: &u32| 0,
        &mut mem,
        &cfg,
        &dir.path().join("d2"),
    )
    .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)));
    assert!(!dir.path().join("d2").exists());
}

#[derive(Debug)]
struct Boom;
impl std::fmt::Display for Boom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("boom")
    }
}
impl std::error::Error for Boom {}

/// Records that fail after `ok` good ones.
fn failing(ok: u32) -> impl Iterator<Item = Result<(u32, u32), Error>> {
    (0..ok).map(|i| Ok((i, i))).chain(std::iter::once(Err(Error::upstream(Boom))))
}

#[test]
fn errors_leave_no_files_and_no_memory() {
    let dir = tempfile::tempdir().unwrap();
    let (pool, cfg) = setup(true, dir.path());
    let data = dir.path().join("map.data");
    let mut mem = pool.reservation();

    let e = write_plain(failing(3000), 4, part_of::<u32>(4), &mut mem, &cfg, &data).unwrap_err();
    assert!(matches!(e, Error::Upstream(_)), "{e:?}");
    assert_eq!(pool.used(), 0);
    assert!(std::fs::read_dir(&cfg.spill_dir).unwrap().count() == 0);

    let e = write_combined(failing(3000), 4, part_of::<u32>(4), &Sum, &mut mem, &cfg, &data).unwrap_err();
    assert!(matches!(e, Error::Upstream(_)));
    assert_eq!(pool.used(), 0);

    // Partitioner out of range, discovered at spill time.
    let e =
        write_combined((0..3000u32).map(|i| Ok::<_, Infallible>((i, i))), 4, |_: &u32| 9, &Sum, &mut mem, &cfg, &data)
            .unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)));
    assert_eq!(pool.used(), 0);

    assert!(combine_by_key(failing(3000), Sum, &mut mem, &cfg.spill_dir, &cfg).is_err());
    assert_eq!(pool.used(), 0);
    assert!(sort_by_key(failing(3000), true, &mut mem, &cfg.spill_dir, &cfg).is_err());
    assert_eq!(pool.used(), 0);

    assert!(spill_dir_is_empty(&cfg));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1); // just `spill`
}

#[test]
fn dropping_iterators_early_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let (pool, cfg) = setup(true, dir.path());
    let mut mem = pool.reservation();
    let records = || (0..5000u32).map(|i| Ok::<_, Infallible>((i, i)));
    let mut it = sort_by_key(records(), false, &mut mem, &cfg.spill_dir, &cfg).unwrap();
    assert!(it.spill_count() > 0);
    assert!(!spill_dir_is_empty(&cfg));
    assert_eq!(it.next().unwrap().unwrap(), (4999, 4999));
    drop(it);
    assert!(spill_dir_is_empty(&cfg));

    let mut it = combine_by_key(records(), Sum, &mut mem, &cfg.spill_dir, &cfg).unwrap();
    assert!(it.spill_count() > 0);
    assert!(it.next().unwrap().is_ok());
    drop(it);
    assert!(spill_dir_is_empty(&cfg));
    drop(mem);
    assert_eq!(pool.used(), 0);
}

#[test]
fn in_memory_iterators_hold_their_memory_until_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (pool, cfg) = setup(false, dir.path());
    let mut mem = pool.reservation();
    let it =
        sort_by_key((0..1000u32).map(|i| Ok::<_, Infallible>((i, i))), true, &mut mem, &cfg.spill_dir, &cfg).unwrap();
    assert_eq!(mem.size(), 0);
    assert!(it.reserved() > 0);
    assert_eq!(pool.used(), it.reserved());
    let v: Vec<_> = it.map(|r| r.unwrap().0).collect();
    assert_eq!(v, (0..1000).collect::<Vec<_>>());
    assert_eq!(pool.used(), 0);
}

#[test]
fn corrupted_map_output_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (_pool, cfg) = setup(false, dir.path());
    let pool = MemoryPool::new(1 << 30);
    let data = dir.path().join("map.data");
    let mut mem = pool.reservation();
    write_plain(
        (0..1000u32).map(|i| Ok::<_, Infallible>((i, format!("v{i}")))),
        2,
        part_of::<u32>(2),
        &mut mem,
        &cfg,
        &data,
    )
    .unwrap();
    let mut bytes = std::fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&data, &bytes).unwrap();
    let mut errors = 0;
    for p in 0..2 {
        let seg = read_segment(&data, p).unwrap();
        if SegmentReader::<u32, String>::new(seg).collect::<Result<Vec<_>, _>>().is_err_and(|e| e.is_corrupt()) {
            errors += 1;
        }
    }
    assert_eq!(errors, 1);
}
