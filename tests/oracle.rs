//! Randomized oracle tests: every pair operation and action against a plain
//! `Vec`/`HashMap` computation, for random data and partition counts, under a
//! tiny executor memory budget so shuffles spill — and all memory must be
//! returned afterwards.

mod common;

use common::{sorted, tight_context, EventLog, MASTERS};
use ember::ListenerEvent;
use proptest::prelude::*;
use std::collections::{BTreeMap, HashMap};

fn oracle_groups(data: &[(u16, i64)]) -> BTreeMap<u16, Vec<i64>> {
    let mut m: BTreeMap<u16, Vec<i64>> = BTreeMap::new();
    for (k, v) in data {
        m.entry(*k).or_default().push(*v);
    }
    m
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn pair_operations_match_the_oracle(
        data in proptest::collection::vec((0u16..40, -1000i64..1000), 0..600),
        other in proptest::collection::vec((0u16..60, -50i64..50), 0..200),
        in_parts in 1usize..6,
        out_parts in 1usize..5,
    ) {
        for master in MASTERS {
            let sc = tight_context(master, "24k");
            let rdd = sc.parallelize(data.clone(), in_parts);
            let groups = oracle_groups(&data);

            let sums: BTreeMap<u16, i64> = rdd.reduce_by_key(|a, b| a + b, out_parts).collect().unwrap().into_iter().collect();
            prop_assert_eq!(&sums, &groups.iter().map(|(k, v)| (*k, v.iter().sum())).collect::<BTreeMap<_, _>>());

            let grouped: BTreeMap<u16, Vec<i64>> = rdd.group_by_key(out_parts).map_values(|mut v| { v.sort(); v }).collect().unwrap().into_iter().collect();
            prop_assert_eq!(&grouped, &groups.iter().map(|(k, v)| (*k, sorted(v.clone()))).collect::<BTreeMap<_, _>>());

            let folded: BTreeMap<u16, i64> = rdd.fold_by_key(0, |a, b| a.max(b), out_parts).collect().unwrap().into_iter().collect();
            prop_assert_eq!(&folded, &groups.iter().map(|(k, v)| (*k, v.iter().copied().fold(0, i64::max))).collect::<BTreeMap<_, _>>());

            let counted = rdd.count_by_key().unwrap();
            prop_assert_eq!(counted, groups.iter().map(|(k, v)| (*k, v.len() as u64)).collect::<HashMap<_, _>>());

            let sorted_keys: Vec<u16> = rdd.sort_by_key(true, out_parts).unwrap().keys().collect().unwrap();
            prop_assert_eq!(sorted_keys, sorted(data.iter().map(|p| p.0).collect()));

            let distinct = sorted(rdd.keys().distinct(out_parts).collect().unwrap());
            prop_assert_eq!(distinct, groups.keys().copied().collect::<Vec<_>>());

            let right = sc.parallelize(other.clone(), 2);
            let joined = sorted(rdd.join(&right, out_parts).collect().unwrap());
            let mut expected = Vec::new();
            for (k, v) in &data { for (k2, w) in &other { if k == k2 { expected.push((*k, (*v, *w))); } } }
            prop_assert_eq!(joined, sorted(expected));

            let left_outer = rdd.left_outer_join(&right, out_parts).count().unwrap();
            let expected_lo: usize = data.iter().map(|(k, _)| other.iter().filter(|(k2, _)| k2 == k).count().max(1)).sum();
            prop_assert_eq!(left_outer as usize, expected_lo);

            let sub = sorted(rdd.subtract_by_key(&right, out_parts).collect().unwrap());
            prop_assert_eq!(sub, sorted(data.iter().filter(|(k, _)| !other.iter().any(|(k2, _)| k2 == k)).cloned().collect()));

            let values = rdd.values();
            prop_assert_eq!(values.count().unwrap() as usize, data.len());
            prop_assert_eq!(values.fold(0, |a, b| a + b).unwrap(), data.iter().map(|p| p.1).sum::<i64>());
            prop_assert_eq!(values.top(5).unwrap(), sorted(data.iter().map(|p| p.1).collect::<Vec<_>>()).into_iter().rev().take(5).collect::<Vec<_>>());
            prop_assert_eq!(values.take_ordered(5).unwrap(), sorted(data.iter().map(|p| p.1).collect::<Vec<_>>()).into_iter().take(5).collect::<Vec<_>>());
            prop_assert_eq!(values.take(7).unwrap(), data.iter().map(|p| p.1).take(7).collect::<Vec<_>>());
            match values.reduce(|a, b| a + b) {
                Ok(v) => prop_assert_eq!(v, data.iter().map(|p| p.1).sum::<i64>()),
                Err(e) => { prop_assert!(data.is_empty()); prop_assert!(matches!(e, ember::Error::EmptyCollection)); }
            }
            prop_assert_eq!(sc.executor_memory_used(), 0, "all memory returned");
            sc.stop();
        }
    }
}

/// Bytes spilled by the tasks of the stages `stage` picks, from their `TaskEnd` events.
fn bytes_spilled(events: &[ListenerEvent], stage: impl Fn(ember::StageId) -> bool) -> u64 {
    events
        .iter()
        .filter_map(|e| match e {
            ListenerEvent::TaskEnd { stage_id, metrics, .. } if stage(*stage_id) => Some(metrics.bytes_spilled),
            _ => None,
        })
        .sum()
}

#[test]
fn a_tiny_memory_budget_forces_spills_and_keeps_the_answer_exact() {
    for master in MASTERS {
        let sc = tight_context(master, "16k");
        let log = EventLog::attach(&sc);
        let data: Vec<(u32, u64)> = (0..40_000u64).map(|i| ((i * 2654435761 % 5000) as u32, i)).collect();
        let sums: HashMap<u32, u64> =
            sc.parallelize(data.clone(), 4).reduce_by_key(|a, b| a + b, 3).collect().unwrap().into_iter().collect();
        let mut expected: HashMap<u32, u64> = HashMap::new();
        for (k, v) in &data {
            *expected.entry(*k).or_default() += v;
        }
        assert_eq!(sums, expected);
        let sorted_out: Vec<u32> =
            sc.parallelize(data.clone(), 4).sort_by_key(true, 3).unwrap().keys().collect().unwrap();
        assert!(sorted_out.windows(2).all(|w| w[0] <= w[1]) && sorted_out.len() == data.len());
        let spilled = bytes_spilled(&log.events(&sc), |_| true);
        assert!(spilled > 0, "map tasks spilled under a 16 KiB budget");
        assert_eq!(sc.executor_memory_used(), 0);
        sc.stop();
    }
}

/// A cogroup holds every value of its partition's keys; past the memory
/// budget it spills its groups (as Spark's `ExternalAppendOnlyMap` does) and
/// still pairs every value exactly.
#[test]
fn a_join_larger_than_memory_spills_its_groups_and_stays_exact() {
    for master in MASTERS {
        let sc = tight_context(master, "16k");
        let log = EventLog::attach(&sc);
        let left: Vec<(u32, u64)> = (0..30_000u64).map(|i| ((i * 2654435761 % 3000) as u32, i)).collect();
        let right: Vec<(u32, u64)> = (0..3_000u64).flat_map(|k| [(k as u32, k), (k as u32, k + 1_000_000)]).collect();
        let joined = sc.parallelize(left.clone(), 3).join(&sc.parallelize(right.clone(), 2), 2);
        let (rows, sum) = joined
            .map(|(k, (v, w))| (1u64, (k as u64).wrapping_mul(31).wrapping_add(v).wrapping_mul(17).wrapping_add(w)))
            .fold((0, 0), |(n, s), (m, t)| (n + m, s.wrapping_add(t)))
            .unwrap();
        let mut by_key: HashMap<u32, Vec<u64>> = HashMap::new();
        for (k, w) in &right {
            by_key.entry(*k).or_default().push(*w);
        }
        let (mut want_rows, mut want_sum) = (0u64, 0u64);
        for (k, v) in &left {
            for w in &by_key[k] {
                want_rows += 1;
                want_sum = want_sum
                    .wrapping_add((*k as u64).wrapping_mul(31).wrapping_add(*v).wrapping_mul(17).wrapping_add(*w));
            }
        }
        assert_eq!((rows, sum), (want_rows, want_sum), "{master}");
        // The cogroup runs in the result stage, the last one submitted.
        let events = log.events(&sc);
        let result_stage = events
            .iter()
            .rev()
            .find_map(|e| match e {
                ListenerEvent::StageSubmitted { stage_id, .. } => Some(*stage_id),
                _ => None,
            })
            .expect("stages ran");
        let cogroup_spilled = bytes_spilled(&events, |stage| stage == result_stage);
        assert!(cogroup_spilled > 0, "{master}: the cogroup spilled under a 16 KiB budget");
        assert_eq!(sc.executor_memory_used(), 0, "{master}");
        sc.stop();
    }
}
