//! The aggregators behind `reduce_by_key`, `fold_by_key`, `aggregate_by_key`,
//! `combine_by_key` and `group_by_key`: user closures (zero-sized, so they
//! ship as types) plus any zero value, as shippable [`Aggregator`]s.

use crate::codec::{Func, ShippableFn};
use ember_shuffle::Aggregator;
use serde::{Deserialize, Serialize};

/// `reduce_by_key(f)`: combiners are values; every merge is `f`.
#[derive(Clone, Copy, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct ReduceAgg<F: ShippableFn>(pub Func<F>);

impl<K, V, F> Aggregator<K, V, V> for ReduceAgg<F>
where
    F: Fn(V, V) -> V + ShippableFn,
{
    fn create_combiner(&self, v: V) -> V {
        v
    }
    fn merge_value(&self, c: V, v: V) -> V {
        (self.0.get())(c, v)
    }
    fn merge_combiners(&self, a: V, b: V) -> V {
        (self.0.get())(a, b)
    }
}

/// `combine_by_key(create, merge_value, merge_combiners)`.
#[derive(Clone, Copy, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct CombineAgg<F1: ShippableFn, F2: ShippableFn, F3: ShippableFn>(pub Func<F1>, pub Func<F2>, pub Func<F3>);

impl<K, V, C, F1, F2, F3> Aggregator<K, V, C> for CombineAgg<F1, F2, F3>
where
    F1: Fn(V) -> C + ShippableFn,
    F2: Fn(C, V) -> C + ShippableFn,
    F3: Fn(C, C) -> C + ShippableFn,
{
    fn create_combiner(&self, v: V) -> C {
        (self.0.get())(v)
    }
    fn merge_value(&self, c: C, v: V) -> C {
        (self.1.get())(c, v)
    }
    fn merge_combiners(&self, a: C, b: C) -> C {
        (self.2.get())(a, b)
    }
}

/// `aggregate_by_key(zero, seq_op, comb_op)`; `fold_by_key(zero, f)` is the
/// special case `seq_op = comb_op = f`. The zero value is cloned for every
/// new key, as Spark does.
#[derive(Clone, Serialize, Deserialize)]
#[serde(bound(serialize = "U: Serialize", deserialize = "U: serde::de::DeserializeOwned"))]
pub struct ZeroAgg<U, F1: ShippableFn, F2: ShippableFn> {
    pub zero: U,
    pub seq: Func<F1>,
    pub comb: Func<F2>,
}

impl<K, V, U, F1, F2> Aggregator<K, V, U> for ZeroAgg<U, F1, F2>
where
    U: Clone + Send + Sync,
    F1: Fn(U, V) -> U + ShippableFn,
    F2: Fn(U, U) -> U + ShippableFn,
{
    fn create_combiner(&self, v: V) -> U {
        (self.seq.get())(self.zero.clone(), v)
    }
    fn merge_value(&self, c: U, v: V) -> U {
        (self.seq.get())(c, v)
    }
    fn merge_combiners(&self, a: U, b: U) -> U {
        (self.comb.get())(a, b)
    }
}

/// `group_by_key`: combiners are vectors of values (never combined map-side).
#[derive(Clone, Copy, Default, Serialize, Deserialize)]
pub struct GroupAgg;

impl<K, V> Aggregator<K, V, Vec<V>> for GroupAgg {
    fn create_combiner(&self, v: V) -> Vec<V> {
        vec![v]
    }
    fn merge_value(&self, mut c: Vec<V>, v: V) -> Vec<V> {
        c.push(v);
        c
    }
    fn merge_combiners(&self, mut a: Vec<V>, mut b: Vec<V>) -> Vec<V> {
        a.append(&mut b);
        a
    }
}
