//! [`Rdd<T>`]: the handle users program against. It pairs a lineage node
//! (from `ember-core`) with the [`Context`] that runs its actions.
//!
//! Closures passed here must not capture anything (they are shipped as
//! types, see `ember_core::codec`); each method has a `*_with(state, f)`
//! variant, or use a broadcast value, for data a closure needs.
//!
//! Transformations live here; actions in `actions.rs`; key-value operations
//! in `pair.rs`.

mod actions;
mod pair;

use crate::context::Context;
use ember_common::{Error, RddId, Result, TaskFailure};
use ember_core::codec::{conjure, Func, ShippableFn};
use ember_core::partitioner::{DirectPartitioner, PartitionerDesc};
use ember_core::rdd::{
    CartesianRdd, CoalescedRdd, FilterBatches, FlatMapBatches, MapBatches, MapPartitionsRdd, PersistedRdd, UnionRdd,
    ZippedRdd,
};
use ember_core::{boxed, BoxIter, Data, Key, Rdd as TypedRdd, RddBase, TaskContext};
use rand::{Rng, SeedableRng};
use rand_distr::Distribution;
use serde::{de::DeserializeOwned, Serialize};
use std::sync::Arc;

/// A resilient distributed dataset of `T`.
pub struct Rdd<T> {
    pub(crate) ctx: Context,
    pub(crate) node: Arc<dyn TypedRdd<T>>,
}

impl<T> Clone for Rdd<T> {
    fn clone(&self) -> Self {
        Rdd { ctx: self.ctx.clone(), node: self.node.clone() }
    }
}

/// Seeds a per-partition random generator the same way on every run.
pub(crate) fn partition_rng(seed: u64, partition: usize) -> rand_pcg::Pcg64 {
    rand_pcg::Pcg64::seed_from_u64(seed ^ (partition as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

impl<T: Data> Rdd<T> {
    pub(crate) fn from_node(ctx: &Context, node: Arc<dyn TypedRdd<T>>) -> Self {
        Rdd { ctx: ctx.clone(), node }
    }

    pub(crate) fn base(&self) -> Arc<dyn RddBase> {
        self.node.clone()
    }

    /// The lineage node behind this handle (for engine-level tools and tests).
    #[doc(hidden)]
    pub fn node(&self) -> Arc<dyn TypedRdd<T>> {
        self.node.clone()
    }

    pub fn id(&self) -> RddId {
        self.node.id()
    }

    pub fn context(&self) -> &Context {
        &self.ctx
    }

    pub fn num_partitions(&self) -> usize {
        self.node.num_partitions()
    }

    /// The partitioner this RDD's layout follows, if known.
    pub fn partitioner(&self) -> Option<PartitionerDesc> {
        self.node.partitioner()
    }

    /// The general narrow transformation: `f(state, task, partition) -> partition`.
    pub(crate) fn transform<U, S, F>(&self, name: &str, state: S, preserves_partitioning: bool, f: F) -> Rdd<U>
    where
        U: Data,
        S: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        F: Fn(&S, &TaskContext, BoxIter<T>) -> BoxIter<U> + ShippableFn,
    {
        let node =
            MapPartitionsRdd::new(self.ctx.new_rdd_id(), name, self.node.clone(), state, f, preserves_partitioning);
        Rdd::from_node(&self.ctx, Arc::new(node))
    }

    pub fn map<U: Data, F: Fn(T) -> U + ShippableFn>(&self, f: F) -> Rdd<U> {
        let _ = Func::new(f);
        self.transform("map", (), false, |_: &(), _: &TaskContext, it: BoxIter<T>| -> BoxIter<U> {
            Box::new(MapBatches::new(it, conjure::<F>()))
        })
    }

    /// `map` with explicit state shipped to the executors.
    pub fn map_with<S, U, F>(&self, state: S, f: F) -> Rdd<U>
    where
        S: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        U: Data,
        F: Fn(&S, T) -> U + ShippableFn,
    {
        let _ = Func::new(f);
        self.transform("map", Arc::new(state), false, |s: &Arc<S>, _: &TaskContext, it: BoxIter<T>| -> BoxIter<U> {
            let s = s.clone();
            Box::new(MapBatches::new(it, move |x| conjure::<F>()(&s, x)))
        })
    }

    pub fn flat_map<U, I, F>(&self, f: F) -> Rdd<U>
    where
        U: Data,
        I: IntoIterator<Item = U> + 'static,
        F: Fn(T) -> I + ShippableFn,
    {
        let _ = Func::new(f);
        self.transform("flatMap", (), false, |_: &(), _: &TaskContext, it: BoxIter<T>| -> BoxIter<U> {
            Box::new(FlatMapBatches::new(it, conjure::<F>()))
        })
    }

    pub fn flat_map_with<S, U, I, F>(&self, state: S, f: F) -> Rdd<U>
    where
        S: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        U: Data,
        I: IntoIterator<Item = U> + 'static,
        F: Fn(&S, T) -> I + ShippableFn,
    {
        let _ = Func::new(f);
        self.transform("flatMap", Arc::new(state), false, |s: &Arc<S>, _: &TaskContext, it: BoxIter<T>| -> BoxIter<U> {
            let s = s.clone();
            Box::new(FlatMapBatches::new(it, move |x| conjure::<F>()(&s, x)))
        })
    }

    pub fn filter<F: Fn(&T) -> bool + ShippableFn>(&self, f: F) -> Rdd<T> {
        let _ = Func::new(f);
        self.transform("filter", (), true, |_: &(), _: &TaskContext, it: BoxIter<T>| -> BoxIter<T> {
            Box::new(FilterBatches::new(it, conjure::<F>()))
        })
    }

    pub fn filter_with<S, F>(&self, state: S, f: F) -> Rdd<T>
    where
        S: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        F: Fn(&S, &T) -> bool + ShippableFn,
    {
        let _ = Func::new(f);
        self.transform("filter", Arc::new(state), true, |s: &Arc<S>, _: &TaskContext, it: BoxIter<T>| -> BoxIter<T> {
            let s = s.clone();
            Box::new(FilterBatches::new(it, move |x| conjure::<F>()(&s, x)))
        })
    }

    /// Transforms whole partitions: `f(iterator) -> iterable`.
    pub fn map_partitions<U, I, F>(&self, f: F) -> Rdd<U>
    where
        U: Data,
        I: IntoIterator<Item = U> + 'static,
        F: Fn(BoxIter<T>) -> I + ShippableFn,
    {
        let _ = Func::new(f);
        self.transform("mapPartitions", (), false, |_: &(), _: &TaskContext, it: BoxIter<T>| -> BoxIter<U> {
            boxed(conjure::<F>()(it).into_iter())
        })
    }

    /// Like `map_partitions`, also given the partition index.
    pub fn map_partitions_with_index<U, I, F>(&self, f: F) -> Rdd<U>
    where
        U: Data,
        I: IntoIterator<Item = U> + 'static,
        F: Fn(usize, BoxIter<T>) -> I + ShippableFn,
    {
        let _ = Func::new(f);
        self.transform("mapPartitionsWithIndex", (), false, |_: &(), ctx: &TaskContext, it: BoxIter<T>| -> BoxIter<U> {
            boxed(conjure::<F>()(ctx.partition_id(), it).into_iter())
        })
    }

    /// `map_partitions_with_index` with explicit state.
    pub fn map_partitions_with<S, U, I, F>(&self, state: S, f: F) -> Rdd<U>
    where
        S: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        U: Data,
        I: IntoIterator<Item = U> + 'static,
        F: Fn(&S, usize, BoxIter<T>) -> I + ShippableFn,
    {
        let _ = Func::new(f);
        self.transform(
            "mapPartitionsWithIndex",
            state,
            false,
            |s: &S, ctx: &TaskContext, it: BoxIter<T>| -> BoxIter<U> {
                boxed(conjure::<F>()(s, ctx.partition_id(), it).into_iter())
            },
        )
    }

    /// Each partition as one vector.
    pub fn glom(&self) -> Rdd<Vec<T>> {
        self.transform("glom", (), false, |_: &(), _: &TaskContext, it: BoxIter<T>| -> BoxIter<Vec<T>> {
            boxed(std::iter::once(it.collect::<Vec<T>>()))
        })
    }

    /// Pairs each element with `f(&element)` as its key.
    pub fn key_by<K: Data, F: Fn(&T) -> K + ShippableFn>(&self, f: F) -> Rdd<(K, T)> {
        let _ = Func::new(f);
        self.transform("keyBy", (), false, |_: &(), _: &TaskContext, it: BoxIter<T>| -> BoxIter<(K, T)> {
            Box::new(MapBatches::new(it, |x| (conjure::<F>()(&x), x)))
        })
    }

    /// This RDD's partitions followed by `other`'s.
    pub fn union(&self, other: &Rdd<T>) -> Rdd<T> {
        let node = UnionRdd::new(self.ctx.new_rdd_id(), vec![self.node.clone(), other.node.clone()]);
        Rdd::from_node(&self.ctx, Arc::new(node))
    }

    /// Pairs elements by position. Both RDDs must have the same number of
    /// partitions (checked now) and of elements per partition (checked when run).
    pub fn zip<U: Data>(&self, other: &Rdd<U>) -> Result<Rdd<(T, U)>> {
        let node = ZippedRdd::new(self.ctx.new_rdd_id(), self.node.clone(), other.node.clone())?;
        Ok(Rdd::from_node(&self.ctx, Arc::new(node)))
    }

    /// Pairs each element with its global index (runs a job to count all but
    /// the last partition, as Spark does).
    pub fn zip_with_index(&self) -> Result<Rdd<(T, u64)>> {
        let n = self.num_partitions();
        let mut starts = vec![0u64; n];
        if n > 1 {
            let counts =
                self.ctx.run_job(self, (0..n - 1).collect(), (), |_: &(), _: &TaskContext, it: BoxIter<T>| {
                    Ok(it.count() as u64)
                })?;
            for i in 1..n {
                starts[i] = starts[i - 1] + counts[i - 1];
            }
        }
        Ok(self.transform(
            "zipWithIndex",
            starts,
            false,
            |starts: &Vec<u64>, ctx: &TaskContext, it: BoxIter<T>| -> BoxIter<(T, u64)> {
                let start = starts[ctx.partition_id()];
                boxed(it.enumerate().map(move |(i, x)| (x, start + i as u64)))
            },
        ))
    }

    /// Fewer partitions without a shuffle: contiguous groups of parent partitions.
    pub fn coalesce(&self, partitions: usize) -> Rdd<T> {
        let node = CoalescedRdd::new(self.ctx.new_rdd_id(), self.node.clone(), partitions.max(1));
        Rdd::from_node(&self.ctx, Arc::new(node))
    }

    /// Exactly `partitions` partitions through a shuffle; elements are dealt
    /// round-robin from a per-partition random start (Spark's `repartition`).
    pub fn repartition(&self, partitions: usize) -> Rdd<T> {
        let n = partitions.max(1);
        let keyed = self.transform(
            "repartition",
            n,
            false,
            |n: &usize, ctx: &TaskContext, it: BoxIter<T>| -> BoxIter<(usize, T)> {
                let n = *n;
                let mut pos = partition_rng(0x5eed, ctx.partition_id()).random_range(0..n);
                Box::new(MapBatches::new(it, move |x| {
                    pos = (pos + 1) % n;
                    (pos, x)
                }))
            },
        );
        keyed.partition_by_with(DirectPartitioner::new(n)).values()
    }

    /// A random sample: each element kept with probability `fraction`
    /// (Bernoulli), or repeated a Poisson(`fraction`) number of times.
    pub fn sample(&self, with_replacement: bool, fraction: f64, seed: u64) -> Result<Rdd<T>> {
        if fraction < 0.0 || !fraction.is_finite() || (!with_replacement && fraction > 1.0) {
            return Err(Error::InvalidArgument(format!(
                "invalid sampling fraction {fraction} (must be >= 0{})",
                if with_replacement { "" } else { " and <= 1 without replacement" }
            )));
        }
        Ok(self.transform(
            "sample",
            (with_replacement, fraction, seed),
            true,
            |s: &(bool, f64, u64), ctx: &TaskContext, it: BoxIter<T>| -> BoxIter<T> {
                let (with_replacement, fraction, seed) = *s;
                let mut rng = partition_rng(seed, ctx.partition_id());
                if with_replacement {
                    if fraction == 0.0 {
                        return boxed(std::iter::empty());
                    }
                    let poisson = rand_distr::Poisson::new(fraction).expect("fraction validated");
                    Box::new(FlatMapBatches::new(it, move |x| {
                        let k = poisson.sample(&mut rng) as usize;
                        std::iter::repeat_n(x, k)
                    }))
                } else {
                    Box::new(FilterBatches::new(it, move |_| rng.random::<f64>() < fraction))
                }
            },
        ))
    }

    /// Every pair `(a, b)` with `a` from this RDD and `b` from `other`.
    pub fn cartesian<U: Data>(&self, other: &Rdd<U>) -> Rdd<(T, U)> {
        let node = CartesianRdd::new(self.ctx.new_rdd_id(), self.node.clone(), other.node.clone());
        Rdd::from_node(&self.ctx, Arc::new(node))
    }

    /// Keeps computed partitions in executor memory for later jobs.
    pub fn persist(&self) -> Rdd<T> {
        let node = PersistedRdd::new(self.ctx.new_rdd_id(), self.node.clone());
        Rdd::from_node(&self.ctx, Arc::new(node))
    }

    pub fn cache(&self) -> Rdd<T> {
        self.persist()
    }

    /// Drops this (persisted) RDD's cached partitions.
    pub fn unpersist(&self) {
        self.ctx.unpersist_rdd(self.id());
    }

    /// Sorts by `f(element)` through a range-partitioned shuffle.
    pub fn sort_by<K, F>(&self, f: F, ascending: bool, partitions: usize) -> Result<Rdd<T>>
    where
        K: Key + Ord,
        F: Fn(&T) -> K + ShippableFn,
    {
        self.key_by(f).sort_by_key(ascending, partitions).map(|r| r.values())
    }
}

impl<T: Key> Rdd<T> {
    /// Distinct elements, through a shuffle into `partitions` partitions.
    pub fn distinct(&self, partitions: usize) -> Rdd<T> {
        self.map(|x| (x, ())).reduce_by_key(|a, _| a, partitions).keys()
    }
}

/// Turns an error met inside an iterator pipeline into a task failure.
pub(crate) fn fail_task(ctx: &TaskContext, e: impl std::fmt::Display) {
    ctx.fail(TaskFailure::Error { message: e.to_string() });
}
