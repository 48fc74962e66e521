//! RDD transformations and actions against Spark's documented results and
//! edge cases, on every master in the shared harness.

mod common;

use common::{each_master, sorted};
use ember::prelude::*;
use std::collections::HashMap;
use std::io::Write;

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn parallelize_slices_like_spark() {
    each_master(|sc| {
        let rdd = sc.parallelize((1..=10).collect::<Vec<i32>>(), 3);
        assert_eq!(rdd.num_partitions(), 3);
        assert_eq!(rdd.glom().collect().unwrap(), vec![vec![1, 2, 3], vec![4, 5, 6], vec![7, 8, 9, 10]]);
        // More slices than elements: empty partitions.
        let sparse = sc.parallelize(vec![1, 2], 4);
        assert_eq!(sparse.glom().collect().unwrap(), vec![vec![], vec![1], vec![], vec![2]]);
    });
}

#[test]
fn basic_narrow_transformations() {
    each_master(|sc| {
        let nums = sc.parallelize((1..=6).collect::<Vec<i64>>(), 2);
        assert_eq!(nums.map(|x| x * 2).collect().unwrap(), vec![2, 4, 6, 8, 10, 12]);
        assert_eq!(nums.filter(|x| x % 2 == 0).collect().unwrap(), vec![2, 4, 6]);
        assert_eq!(nums.flat_map(|x| vec![x; (x % 3) as usize]).collect().unwrap(), vec![1, 2, 2, 4, 5, 5]);
        assert_eq!(nums.map_partitions(|it| std::iter::once(it.sum::<i64>())).collect().unwrap(), vec![6, 15]);
        assert_eq!(
            nums.map_partitions_with_index(|i, it| it.map(move |x| (i, x))).collect().unwrap(),
            vec![(0, 1), (0, 2), (0, 3), (1, 4), (1, 5), (1, 6)]
        );
        assert_eq!(nums.map_with(100i64, |o, x| x + o).collect().unwrap(), vec![101, 102, 103, 104, 105, 106]);
        assert_eq!(nums.filter_with(4i64, |t, x| x > t).collect().unwrap(), vec![5, 6]);
        assert_eq!(nums.key_by(|x| x % 2).collect().unwrap()[0], (1, 1));
        let pairs = sc.parallelize(vec![("a".to_string(), 1), ("b".to_string(), 2)], 2);
        assert_eq!(pairs.keys().collect().unwrap(), vec!["a", "b"]);
        assert_eq!(pairs.values().collect().unwrap(), vec![1, 2]);
        assert_eq!(pairs.map_values(|v| v * 10).collect().unwrap(), vec![("a".to_string(), 10), ("b".to_string(), 20)]);
        assert_eq!(
            pairs.flat_map_values(|v| 0..v).collect().unwrap(),
            vec![("a".to_string(), 0), ("b".to_string(), 0), ("b".to_string(), 1)]
        );
    });
}

#[test]
fn range_matches_spark() {
    each_master(|sc| {
        assert_eq!(sc.range(0, 10, 3, 2).unwrap().collect().unwrap(), vec![0, 3, 6, 9]);
        assert_eq!(sc.range(5, 0, -2, 3).unwrap().collect().unwrap(), vec![5, 3, 1]);
        assert_eq!(sc.range(0, 0, 1, 2).unwrap().count().unwrap(), 0);
        assert_eq!(sc.range(0, 1000, 1, 7).unwrap().count().unwrap(), 1000);
        assert!(sc.range(0, 10, 0, 2).is_err());
    });
}

#[test]
fn actions_follow_spark_semantics() {
    each_master(|sc| {
        let nums = sc.parallelize((1..=10).collect::<Vec<i32>>(), 3);
        assert_eq!(nums.count().unwrap(), 10);
        assert_eq!(nums.reduce(|a, b| a + b).unwrap(), 55);
        // fold applies the zero once per partition and once on the driver: 3 partitions + 1.
        assert_eq!(nums.fold(1, |a, b| a + b).unwrap(), 55 + 4);
        assert_eq!(
            nums.aggregate((0, 0), |(s, c), x| (s + x, c + 1), |a, b| (a.0 + b.0, a.1 + b.1)).unwrap(),
            (55, 10)
        );
        assert_eq!(nums.take(0).unwrap(), Vec::<i32>::new());
        assert_eq!(nums.take(4).unwrap(), vec![1, 2, 3, 4]);
        assert_eq!(nums.take(100).unwrap().len(), 10);
        assert_eq!(nums.first().unwrap(), 1);
        assert_eq!(nums.top(3).unwrap(), vec![10, 9, 8]);
        assert_eq!(nums.take_ordered(3).unwrap(), vec![1, 2, 3]);
        assert_eq!(nums.top_by(2, |x| -x).unwrap(), vec![1, 2]);
        let words = sc.parallelize(strs(&["a", "b", "a", "c", "a"]), 2);
        let by_value = words.count_by_value().unwrap();
        assert_eq!(by_value["a"], 3);
        assert_eq!(by_value.len(), 3);
        let by_key = words.map(|w| (w, 0)).count_by_key().unwrap();
        assert_eq!(by_key, by_value);
        nums.foreach(|x| assert!(x > 0)).unwrap();
        nums.foreach_partition(|it| assert!(it.count() >= 3)).unwrap();
    });
}

#[test]
fn empty_rdds_and_empty_partitions() {
    each_master(|sc| {
        let empty = sc.empty::<i32>();
        assert_eq!(empty.num_partitions(), 0);
        assert_eq!(empty.count().unwrap(), 0);
        assert!(empty.collect().unwrap().is_empty());
        assert!(matches!(empty.reduce(|a, b| a + b), Err(Error::EmptyCollection)));
        assert_eq!(empty.reduce(|a, b| a + b).unwrap_err().to_string(), "empty collection");
        assert!(matches!(empty.first(), Err(Error::EmptyCollection)));
        assert_eq!(empty.fold(7, |a, b| a + b).unwrap(), 7);
        assert!(empty.take(5).unwrap().is_empty());
        assert!(empty.top(2).unwrap().is_empty());
        // Partitions that exist but hold nothing.
        let hollow = sc.parallelize(Vec::<i32>::new(), 3);
        assert!(matches!(hollow.reduce(|a, b| a + b), Err(Error::EmptyCollection)));
        assert_eq!(hollow.fold(1, |a, b| a + b).unwrap(), 4);
        assert_eq!(hollow.map(|x| (x, x)).reduce_by_key(|a, b| a + b, 2).count().unwrap(), 0);
        assert!(hollow.map(|x| (x, x)).sort_by_key(true, 3).unwrap().collect().unwrap().is_empty());
        // take scans incrementally past empty partitions.
        let late = sc.parallelize(vec![1, 2, 3], 8);
        assert_eq!(late.take(2).unwrap(), vec![1, 2]);
    });
}

#[test]
fn union_zip_cartesian_coalesce() {
    each_master(|sc| {
        let a = sc.parallelize(vec![1, 2, 3], 2);
        let b = sc.parallelize(vec![4, 5], 1);
        let u = a.union(&b);
        assert_eq!(u.num_partitions(), 3);
        assert_eq!(u.collect().unwrap(), vec![1, 2, 3, 4, 5]);
        assert_eq!(sc.union(&[a.clone(), b.clone(), a.clone()]).count().unwrap(), 8);

        let letters = sc.parallelize(vec!['a', 'b', 'c'], 2);
        assert_eq!(a.zip(&letters).unwrap().collect().unwrap(), vec![(1, 'a'), (2, 'b'), (3, 'c')]);
        let err = a.zip(&b).err().expect("unequal partitions");
        assert!(err.to_string().contains("Can't zip RDDs with unequal numbers of partitions"), "{err}");
        let uneven = sc.parallelize(vec![1, 2, 3, 4], 2);
        let err = a.zip(&uneven).unwrap().collect().unwrap_err().to_string();
        assert!(err.contains("Can only zip RDDs with same number of elements in each partition"), "{err}");

        assert_eq!(
            sc.parallelize(strs(&["x", "y", "z"]), 3).zip_with_index().unwrap().collect().unwrap(),
            vec![("x".to_string(), 0), ("y".to_string(), 1), ("z".to_string(), 2)]
        );
        let idx = sc.parallelize((0..100).collect::<Vec<u64>>(), 7).zip_with_index().unwrap();
        assert!(idx.collect().unwrap().into_iter().all(|(x, i)| x == i));

        let cart = a.cartesian(&letters);
        assert_eq!(cart.num_partitions(), 4);
        assert_eq!(sorted(cart.collect().unwrap()).len(), 9);

        let many = sc.parallelize((0..20).collect::<Vec<i32>>(), 10);
        let fewer = many.coalesce(3);
        assert_eq!(fewer.num_partitions(), 3);
        assert_eq!(fewer.collect().unwrap(), (0..20).collect::<Vec<_>>());
        assert_eq!(many.coalesce(50).num_partitions(), 10, "coalesce without shuffle cannot grow");
        let re = many.repartition(4);
        assert_eq!(re.num_partitions(), 4);
        assert_eq!(sorted(re.collect().unwrap()), (0..20).collect::<Vec<_>>());
        let sizes: Vec<usize> = re.glom().collect().unwrap().iter().map(Vec::len).collect();
        assert!(sizes.iter().all(|s| (3..=7).contains(s)), "round-robin keeps partitions balanced: {sizes:?}");
    });
}

#[test]
fn sampling_is_seeded_and_plausible() {
    each_master(|sc| {
        let nums = sc.parallelize((0..10_000).collect::<Vec<i32>>(), 4);
        let s1 = nums.sample(false, 0.1, 7).unwrap().collect().unwrap();
        let s2 = nums.sample(false, 0.1, 7).unwrap().collect().unwrap();
        assert_eq!(s1, s2, "same seed, same sample");
        assert!((800..1200).contains(&s1.len()), "{}", s1.len());
        let with = nums.sample(true, 2.0, 3).unwrap().count().unwrap();
        assert!((18_000..22_000).contains(&with), "{with}");
        assert!(nums.sample(false, 1.5, 1).is_err());
        assert_eq!(nums.sample(false, 0.0, 1).unwrap().count().unwrap(), 0);
    });
}

#[test]
fn aggregations_by_key() {
    each_master(|sc| {
        let pairs =
            sc.parallelize(strs(&["a", "b", "a", "c", "a"]), 3).zip(&sc.parallelize(vec![1, 1, 2, 5, 3], 3)).unwrap();
        let m = |v: Vec<(String, i32)>| v.into_iter().collect::<HashMap<_, _>>();
        assert_eq!(m(pairs.reduce_by_key(|a, b| a + b, 2).collect().unwrap())["a"], 6);
        // fold_by_key: zero per key per partition ("a" is in 2 map partitions -> +2 zeros... of 10).
        let folded = m(pairs.fold_by_key(0, |a, b| a + b, 2).collect().unwrap());
        assert_eq!(folded["a"], 6);
        let agg = pairs.aggregate_by_key(
            Vec::new(),
            |mut acc: Vec<i32>, v| {
                acc.push(v);
                acc
            },
            |mut a, mut b| {
                a.append(&mut b);
                a
            },
            2,
        );
        let mut a_vals = agg.collect().unwrap().into_iter().find(|(k, _)| k == "a").unwrap().1;
        a_vals.sort();
        assert_eq!(a_vals, vec![1, 2, 3]);
        let comb =
            pairs.combine_by_key(|v| (v, 1), |(s, c), v| (s + v, c + 1), |(s1, c1), (s2, c2)| (s1 + s2, c1 + c2), 3);
        assert_eq!(m(comb.collect().unwrap().into_iter().map(|(k, (s, c))| (k, s * 100 + c)).collect())["a"], 603);
        let grouped = pairs
            .group_by_key(2)
            .map_values(|mut v| {
                v.sort();
                v
            })
            .collect()
            .unwrap();
        let grouped: HashMap<String, Vec<i32>> = grouped.into_iter().collect();
        assert_eq!(grouped["a"], vec![1, 2, 3]);
        assert_eq!(grouped.len(), 3);
        assert_eq!(sorted(sc.parallelize(vec![3, 1, 3, 2, 1], 2).distinct(2).collect().unwrap()), vec![1, 2, 3]);
    });
}

#[test]
fn sorting_is_total_and_ordered() {
    each_master(|sc| {
        let data: Vec<(i32, i32)> = (0..1000).map(|i| ((i * 7919) % 1000, i)).collect();
        let rdd = sc.parallelize(data.clone(), 5);
        let asc = rdd.sort_by_key(true, 4).unwrap();
        assert!(asc.num_partitions() <= 4);
        let keys: Vec<i32> = asc.keys().collect().unwrap();
        assert_eq!(keys, (0..1000).collect::<Vec<_>>());
        let sizes: Vec<usize> = asc.glom().collect().unwrap().iter().map(Vec::len).collect();
        assert!(sizes.iter().all(|s| *s > 100), "range partitions are balanced: {sizes:?}");
        let desc: Vec<i32> = rdd.sort_by_key(false, 3).unwrap().keys().collect().unwrap();
        assert_eq!(desc, (0..1000).rev().collect::<Vec<_>>());
        let by = sc.parallelize(strs(&["ccc", "a", "bb"]), 2).sort_by(|s| s.len(), true, 2).unwrap();
        assert_eq!(by.collect().unwrap(), vec!["a", "bb", "ccc"]);
    });
}

/// Byte-vector and string records (a terasort's shape) are sorted still
/// encoded; keys sharing their first 8 bytes order by the rest, descending
/// sorts too, and the values travel with their keys.
#[test]
fn byte_records_sort_by_whole_keys() {
    each_master(|sc| {
        let data: Vec<(Vec<u8>, Vec<u8>)> = (0..3000u32)
            .map(|i| {
                let mut k = b"prefix--".to_vec();
                k.extend_from_slice(&((i * 7919) % 3000).to_be_bytes());
                (k, i.to_le_bytes().to_vec())
            })
            .collect();
        let mut want = data.clone();
        want.sort();
        let got = sc.parallelize(data.clone(), 4).sort_by_key(true, 3).unwrap().collect().unwrap();
        assert_eq!(got, want);
        want.reverse();
        assert_eq!(sc.parallelize(data, 4).sort_by_key(false, 2).unwrap().collect().unwrap(), want);
        let words = strs(&["pear", "fig", "apple", "é", "applesauce", "", "fig"]);
        let pairs: Vec<(String, String)> = words.iter().map(|w| (w.clone(), w.to_uppercase())).collect();
        let sorted_words: Vec<(String, String)> =
            sc.parallelize(pairs, 3).sort_by_key(true, 2).unwrap().collect().unwrap();
        let keys: Vec<&str> = sorted_words.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, vec!["", "apple", "applesauce", "fig", "fig", "pear", "é"]);
        assert!(sorted_words.iter().all(|(k, v)| *v == k.to_uppercase()));
    });
}

#[test]
fn joins_match_spark() {
    each_master(|sc| {
        let left = sc.parallelize(vec![(1, 'a'), (2, 'b'), (2, 'c'), (3, 'd')], 2);
        let right = sc.parallelize(vec![2, 2, 4], 2).zip(&sc.parallelize(strs(&["x", "y", "z"]), 2)).unwrap();
        let j = sorted(left.join(&right, 3).collect().unwrap());
        assert_eq!(
            j,
            vec![(2, ('b', "x".into())), (2, ('b', "y".into())), (2, ('c', "x".into())), (2, ('c', "y".into()))]
        );
        let lo = sorted(left.left_outer_join(&right, 2).collect().unwrap());
        assert_eq!(lo.len(), 6);
        assert!(lo.contains(&(1, ('a', None))));
        assert!(lo.contains(&(3, ('d', None))));
        let ro = sorted(left.right_outer_join(&right, 2).collect().unwrap());
        assert_eq!(ro.len(), 5);
        assert!(ro.contains(&(4, (None, "z".to_string()))));
        let fo = sorted(left.full_outer_join(&right, 2).collect().unwrap());
        assert_eq!(fo.len(), 7);
        assert!(fo.contains(&(1, (Some('a'), None))) && fo.contains(&(4, (None, Some("z".to_string())))));
        let sub = sorted(left.subtract_by_key(&right, 2).collect().unwrap());
        assert_eq!(sub, vec![(1, 'a'), (3, 'd')]);
        let cg = left.cogroup(&right, 2).collect().unwrap();
        let two = cg.into_iter().find(|(k, _)| *k == 2).unwrap().1;
        assert_eq!((sorted(two.0), sorted(two.1)), (vec!['b', 'c'], vec!["x".to_string(), "y".to_string()]));
    });
}

#[test]
fn partitioner_awareness() {
    each_master(|sc| {
        let pairs = sc.parallelize((0..100).map(|i| (i % 10, 1u32)).collect::<Vec<_>>(), 4);
        let parted = pairs.partition_by(5);
        assert_eq!(parted.partitioner(), Some(ember::PartitionerDesc::Hash(5)));
        // map_values keeps the partitioner, map drops it.
        assert_eq!(parted.map_values(|v| v + 1).partitioner(), Some(ember::PartitionerDesc::Hash(5)));
        assert_eq!(parted.map(|(k, v)| (k, v)).partitioner(), None);
        // Same partitioning: no new shuffle, so the reduced RDD's only dependency is narrow.
        let reduced = parted.reduce_by_key(|a, b| a + b, 5);
        assert!(matches!(reduced.node().dependencies().as_slice(), [ember_core::Dependency::Narrow(_)]));
        assert_eq!(reduced.partitioner(), Some(ember::PartitionerDesc::Hash(5)));
        assert_eq!(sorted(reduced.collect().unwrap()), (0..10).map(|k| (k, 10)).collect::<Vec<_>>());
        // A different partition count still shuffles.
        let again = parted.reduce_by_key(|a, b| a + b, 3);
        assert!(matches!(again.node().dependencies().as_slice(), [ember_core::Dependency::Shuffle(_)]));
        // Joining co-partitioned RDDs needs no shuffle on either side.
        let other = parted.map_values(|v| v * 2);
        let joined = parted.join(&other, 5);
        assert_eq!(joined.count().unwrap(), 100 * 10);
    });
}

fn write(dir: &std::path::Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p).unwrap().write_all(bytes).unwrap();
    p
}

#[test]
fn text_file_edges() {
    each_master(|sc| {
        let dir = tempfile::tempdir().unwrap();
        let crlf = write(dir.path(), "crlf.txt", b"one\r\ntwo\r\nthree");
        assert_eq!(sc.text_file(&crlf, 3).unwrap().collect().unwrap(), vec!["one", "two", "three"]);
        let empty = write(dir.path(), "empty.txt", b"");
        assert_eq!(sc.text_file(&empty, 2).unwrap().count().unwrap(), 0);
        // Many splits, lines crossing split edges: every line exactly once, in order.
        let lines: Vec<String> = (0..500).map(|i| format!("line {i} {}", "x".repeat(i % 37))).collect();
        let many = write(dir.path(), "many.txt", (lines.join("\n") + "\n").as_bytes());
        let rdd = sc.text_file(&many, 13).unwrap();
        assert!(rdd.num_partitions() >= 13);
        assert_eq!(rdd.collect().unwrap(), lines);
        // A directory reads every visible file; hidden and _ files are skipped.
        let sub = dir.path().join("dir");
        std::fs::create_dir(&sub).unwrap();
        write(&sub, "a.txt", b"1\n2\n");
        write(&sub, "b.txt", b"3");
        write(&sub, "_SUCCESS", b"");
        write(&sub, ".hidden", b"9\n");
        assert_eq!(sc.text_file(&sub, 1).unwrap().collect().unwrap(), vec!["1", "2", "3"]);
        let missing = sc.text_file(dir.path().join("nope.txt"), 2).err().expect("missing input").to_string();
        assert!(missing.contains("nope.txt"), "{missing}");
    });
}

#[test]
fn save_as_text_file_writes_parts_and_success() {
    each_master(|sc| {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        sc.parallelize(vec![1, 2, 3, 4, 5], 3).save_as_text_file(&out).unwrap();
        let mut names: Vec<String> =
            std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        assert_eq!(names, vec!["_SUCCESS", "part-00000", "part-00001", "part-00002"]);
        assert_eq!(std::fs::read_to_string(out.join("part-00002")).unwrap(), "4\n5\n");
        let back = sc.text_file(&out, 2).unwrap().map(|l| l.parse::<i32>().unwrap()).collect().unwrap();
        assert_eq!(back, vec![1, 2, 3, 4, 5]);
        let err = sc.parallelize(vec![1], 1).save_as_text_file(&out).unwrap_err().to_string();
        assert!(err.contains("already exists"), "{err}");
    });
}

#[test]
fn persisted_rdds_are_reused() {
    each_master(|sc| {
        let base = sc.parallelize((0..50).collect::<Vec<i32>>(), 5);
        // A sample is random per run only through its seed; persisting pins the computed values.
        let cached = base.map(|x| x * 3).persist();
        assert_eq!(cached.count().unwrap(), 50);
        assert_eq!(cached.reduce(|a, b| a + b).unwrap(), 3 * 49 * 50 / 2);
        cached.unpersist();
        assert_eq!(cached.count().unwrap(), 50, "unpersisted data is recomputed");
    });
}

#[test]
fn broadcast_values_reach_every_task() {
    each_master(|sc| {
        let names: HashMap<u32, String> = (0..100).map(|i| (i, format!("n{i}"))).collect();
        let bc = sc.broadcast(names);
        let looked_up = sc
            .parallelize((0..100u32).collect::<Vec<_>>(), 4)
            .map_with(bc.clone(), |bc, x| bc.value()[&x].clone())
            .collect()
            .unwrap();
        assert_eq!(looked_up[42], "n42");
        assert_eq!(looked_up.len(), 100);
        assert_eq!(bc.value().len(), 100);
    });
}

#[test]
fn binary_records_are_never_cut() {
    each_master(|sc| {
        let dir = tempfile::tempdir().unwrap();
        let records: Vec<Vec<u8>> = (0..97u8).map(|i| vec![i; 10]).collect();
        let path = write(dir.path(), "recs.bin", &records.concat());
        let rdd = sc.binary_records(&path, 10, 7).unwrap();
        assert!(rdd.num_partitions() >= 7);
        assert_eq!(rdd.collect().unwrap(), records);
        let bad = write(dir.path(), "bad.bin", &[1, 2, 3]);
        assert!(sc.binary_records(&bad, 10, 1).is_err());
    });
}

/// A partition's iterator handed to user code is an ordinary iterator, and
/// user code can box its own as one (`ember::boxed`).
#[test]
fn user_code_can_build_and_return_partition_iterators() {
    fn evens(it: ember::BoxIter<u32>) -> ember::BoxIter<u32> {
        ember::boxed(it.filter(|x| x % 2 == 0))
    }
    each_master(|sc| {
        let out = sc.parallelize((0..20u32).collect::<Vec<_>>(), 3).map_partitions(evens).collect().unwrap();
        assert_eq!(out, (0..20u32).filter(|x| x % 2 == 0).collect::<Vec<_>>());
    });
}
