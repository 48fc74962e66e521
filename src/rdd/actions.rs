//! Actions: each runs one or more jobs through [`Context::run_job`] and
//! reduces the per-partition results on the driver, with Spark's semantics:
//! `fold` applies its zero once per partition and once more on the driver,
//! `reduce` of nothing is an "empty collection" error, `take` scans
//! partitions incrementally (1, then up to `ember.rdd.limit.scaleUpFactor`
//! times more each round), `top`/`take_ordered` keep `n` per partition.

use super::{fail_task, Rdd};
use ember_common::{Error, Result};
use ember_core::codec::{conjure, Func, ShippableFn};
use ember_core::{BoxIter, Data, Key, TaskContext};
use serde::{de::DeserializeOwned, Serialize};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt::Display;
use std::io::Write;
use std::path::PathBuf;

fn all(n: usize) -> Vec<usize> {
    (0..n).collect()
}

/// The `n` greatest items of an iterator by `key`, greatest first.
fn top_n<T, K: Ord>(it: impl Iterator<Item = T>, n: usize, key: impl Fn(&T) -> K) -> Vec<T> {
    if n == 0 {
        return Vec::new();
    }
    // Min-heap of the best n seen so far; ties broken by arrival order.
    let mut heap: BinaryHeap<Reverse<(K, Reverse<usize>)>> = BinaryHeap::new();
    let mut items: HashMap<usize, T> = HashMap::new();
    for (i, x) in it.enumerate() {
        let k = key(&x);
        if heap.len() < n {
            heap.push(Reverse((k, Reverse(i))));
            items.insert(i, x);
        } else if heap.peek().is_some_and(|Reverse(min)| (&k, Reverse(i)) > (&min.0, min.1)) {
            let Reverse((_, Reverse(old))) = heap.pop().expect("non-empty");
            items.remove(&old);
            heap.push(Reverse((k, Reverse(i))));
            items.insert(i, x);
        }
    }
    let mut ranked: Vec<(K, Reverse<usize>)> = heap.into_iter().map(|Reverse(e)| e).collect();
    ranked.sort_by(|a, b| b.cmp(a));
    ranked.into_iter().map(|(_, Reverse(i))| items.remove(&i).expect("kept")).collect()
}

impl<T: Data> Rdd<T> {
    /// All elements, in partition order.
    pub fn collect(&self) -> Result<Vec<T>> {
        let parts =
            self.ctx.run_job(self, all(self.num_partitions()), (), |_: &(), _: &TaskContext, it: BoxIter<T>| {
                Ok(it.collect::<Vec<T>>())
            })?;
        Ok(parts.into_iter().flatten().collect())
    }

    pub fn count(&self) -> Result<u64> {
        let counts =
            self.ctx.run_job(self, all(self.num_partitions()), (), |_: &(), _: &TaskContext, it: BoxIter<T>| {
                Ok(it.count() as u64)
            })?;
        Ok(counts.into_iter().sum())
    }

    /// Combines all elements with `f`; an error on an empty RDD.
    pub fn reduce<F: Fn(T, T) -> T + ShippableFn>(&self, f: F) -> Result<T> {
        let f = Func::new(f);
        let parts =
            self.ctx.run_job(self, all(self.num_partitions()), (), |_: &(), _: &TaskContext, it: BoxIter<T>| {
                Ok(it.reduce(conjure::<F>()))
            })?;
        parts.into_iter().flatten().reduce(f.get()).ok_or(Error::EmptyCollection)
    }

    /// Folds each partition from `zero`, then the partition results from `zero`.
    pub fn fold<F: Fn(T, T) -> T + ShippableFn>(&self, zero: T, f: F) -> Result<T> {
        self.aggregate(zero, f, f)
    }

    /// `seq` folds each partition from `zero`; `comb` merges partition results from `zero`.
    pub fn aggregate<U, F1, F2>(&self, zero: U, seq: F1, comb: F2) -> Result<U>
    where
        U: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        F1: Fn(U, T) -> U + ShippableFn,
        F2: Fn(U, U) -> U + ShippableFn,
    {
        let _ = Func::new(seq);
        let comb = Func::new(comb);
        let parts = self.ctx.run_job(
            self,
            all(self.num_partitions()),
            zero.clone(),
            |z: &U, _: &TaskContext, it: BoxIter<T>| Ok(it.fold(z.clone(), conjure::<F1>())),
        )?;
        Ok(parts.into_iter().fold(zero, comb.get()))
    }

    /// The first `n` elements, scanning as few partitions as it can.
    pub fn take(&self, n: usize) -> Result<Vec<T>> {
        let mut buf: Vec<T> = Vec::new();
        let total = self.num_partitions();
        let scale_up = self.ctx.scale_up_factor();
        let mut scanned = 0usize;
        while buf.len() < n && scanned < total {
            let left = n - buf.len();
            let mut to_try = 1usize;
            if scanned > 0 {
                to_try = if buf.is_empty() {
                    scanned * scale_up
                } else {
                    let estimate = (1.5 * left as f64 * scanned as f64 / buf.len() as f64) as usize;
                    estimate.saturating_sub(scanned).max(1).min(scanned * scale_up)
                };
            }
            let parts: Vec<usize> = (scanned..(scanned + to_try).min(total)).collect();
            let got = parts.len();
            let results = self.ctx.run_job(self, parts, left, |left: &usize, _: &TaskContext, it: BoxIter<T>| {
                Ok(it.take(*left).collect::<Vec<T>>())
            })?;
            for r in results {
                let room = n - buf.len();
                buf.extend(r.into_iter().take(room));
            }
            scanned += got;
        }
        Ok(buf)
    }

    /// The first element; an error on an empty RDD.
    pub fn first(&self) -> Result<T> {
        self.take(1)?.into_iter().next().ok_or(Error::EmptyCollection)
    }

    /// The `n` elements with the greatest `key(element)`, greatest first.
    pub fn top_by<K: Ord, F: Fn(&T) -> K + ShippableFn>(&self, n: usize, key: F) -> Result<Vec<T>> {
        let key = Func::new(key);
        let parts =
            self.ctx.run_job(self, all(self.num_partitions()), n, |n: &usize, _: &TaskContext, it: BoxIter<T>| {
                Ok(top_n(it, *n, conjure::<F>()))
            })?;
        Ok(top_n(parts.into_iter().flatten(), n, key.get()))
    }

    /// The `n` elements with the smallest `key(element)`, smallest first.
    pub fn take_ordered_by<K: Ord, F: Fn(&T) -> K + ShippableFn>(&self, n: usize, key: F) -> Result<Vec<T>> {
        let key = Func::new(key);
        let parts =
            self.ctx.run_job(self, all(self.num_partitions()), n, |n: &usize, _: &TaskContext, it: BoxIter<T>| {
                Ok(top_n(it, *n, |x: &T| Reverse(conjure::<F>()(x))))
            })?;
        let key = *key.get();
        Ok(top_n(parts.into_iter().flatten(), n, |x: &T| Reverse(key(x))))
    }

    /// Runs `f` on every element, on the executors.
    pub fn foreach<F: Fn(T) + ShippableFn>(&self, f: F) -> Result<()> {
        let _ = Func::new(f);
        self.ctx.run_job(self, all(self.num_partitions()), (), |_: &(), _: &TaskContext, it: BoxIter<T>| {
            it.for_each(conjure::<F>());
            Ok(())
        })?;
        Ok(())
    }

    /// Runs `f` on every partition's iterator, on the executors.
    pub fn foreach_partition<F: Fn(BoxIter<T>) + ShippableFn>(&self, f: F) -> Result<()> {
        let _ = Func::new(f);
        self.ctx.run_job(self, all(self.num_partitions()), (), |_: &(), _: &TaskContext, it: BoxIter<T>| {
            conjure::<F>()(it);
            Ok(())
        })?;
        Ok(())
    }
}

impl<T: Data + Ord> Rdd<T> {
    /// The `n` greatest elements, greatest first.
    pub fn top(&self, n: usize) -> Result<Vec<T>> {
        self.top_by(n, |x: &T| x.clone())
    }

    /// The `n` smallest elements, smallest first.
    pub fn take_ordered(&self, n: usize) -> Result<Vec<T>> {
        self.take_ordered_by(n, |x: &T| x.clone())
    }
}

impl<T: Key> Rdd<T> {
    /// How many times each distinct element occurs.
    pub fn count_by_value(&self) -> Result<HashMap<T, u64>> {
        self.map(|x| (x, 1u64)).count_by_key_sum()
    }
}

impl<T: Data + Display> Rdd<T> {
    /// Writes one `part-NNNNN` text file per partition (one element per line)
    /// and an empty `_SUCCESS` marker. Refuses an existing directory.
    pub fn save_as_text_file(&self, path: impl Into<PathBuf>) -> Result<()> {
        let dir: PathBuf = path.into();
        if dir.exists() {
            return Err(Error::InvalidArgument(format!("Output directory {} already exists", dir.display())));
        }
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
        let dir_str = dir.to_string_lossy().into_owned();
        self.ctx.run_job(
            self,
            all(self.num_partitions()),
            dir_str,
            |dir: &String, ctx: &TaskContext, it: BoxIter<T>| {
                let part = std::path::Path::new(dir).join(format!("part-{:05}", ctx.partition_id()));
                let tmp = std::path::Path::new(dir).join(format!(
                    ".part-{:05}.attempt-{}",
                    ctx.partition_id(),
                    ctx.task_id().0
                ));
                let write = || -> std::io::Result<()> {
                    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp)?);
                    for x in it {
                        writeln!(out, "{x}")?;
                    }
                    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
                    Ok(())
                };
                match write() {
                    Ok(()) if !ctx.should_stop() => std::fs::rename(&tmp, &part)
                        .map_err(|e| Error::io(format!("cannot commit {}", part.display()), e)),
                    Ok(()) => {
                        let _ = std::fs::remove_file(&tmp);
                        Ok(())
                    }
                    Err(e) => {
                        let _ = std::fs::remove_file(&tmp);
                        fail_task(ctx, format!("writing {}: {e}", part.display()));
                        Ok(())
                    }
                }
            },
        )?;
        std::fs::File::create(dir.join("_SUCCESS"))
            .map_err(|e| Error::io(format!("cannot write {}/_SUCCESS", dir.display()), e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::top_n;

    #[test]
    fn top_n_keeps_the_greatest_in_order() {
        assert_eq!(top_n([5, 1, 9, 3, 9, 7].into_iter(), 3, |x| *x), vec![9, 9, 7]);
        assert_eq!(top_n([1, 2].into_iter(), 5, |x| *x), vec![2, 1]);
        assert!(top_n([1, 2].into_iter(), 0, |x| *x).is_empty());
    }
}
