//! RDDs with no parents: `empty`, `parallelize` and `range`.

use super::{any_rdd, boxed, BoxIter, Data, Dependency, Rdd, RddBase};
use crate::codec::{encode_node, AnyNode, Encode, EncodedNode};
use crate::task::TaskContext;
use ember_common::{RddId, Result};
use std::marker::PhantomData;
use std::sync::Arc;

/// An RDD with no partitions.
pub struct EmptyRdd<T> {
    id: RddId,
    _t: PhantomData<fn() -> T>,
}

impl<T: Data> EmptyRdd<T> {
    pub fn new(id: RddId) -> Self {
        EmptyRdd { id, _t: PhantomData }
    }
}

impl<T: Data> Encode for EmptyRdd<T> {
    type Payload = RddId;
    fn payload(&self) -> RddId {
        self.id
    }
    fn decode(id: RddId, _: &[AnyNode]) -> Result<Self> {
        Ok(EmptyRdd::new(id))
    }
    fn into_any(self) -> AnyNode {
        any_rdd::<T>(Arc::new(self))
    }
}

impl<T: Data> RddBase for EmptyRdd<T> {
    fn id(&self) -> RddId {
        self.id
    }
    fn name(&self) -> &str {
        "emptyRDD"
    }
    fn num_partitions(&self) -> usize {
        0
    }
    fn dependencies(&self) -> Vec<Dependency> {
        Vec::new()
    }
    fn encode_self(&self) -> Result<EncodedNode> {
        encode_node(self)
    }
}

impl<T: Data> Rdd<T> for EmptyRdd<T> {
    fn compute(&self, _: usize, _: &TaskContext) -> Result<BoxIter<T>> {
        Ok(boxed(std::iter::empty()))
    }
}

/// A driver-side collection cut into slices, as Spark's `parallelize` does:
/// slice `i` holds elements `[i*len/n, (i+1)*len/n)`.
pub struct ParallelCollectionRdd<T> {
    id: RddId,
    slices: Vec<Arc<Vec<T>>>,
}

impl<T: Data> ParallelCollectionRdd<T> {
    pub fn new(id: RddId, data: Vec<T>, num_slices: usize) -> Self {
        let len = data.len();
        let mut slices = Vec::with_capacity(num_slices);
        let mut iter = data.into_iter();
        for i in 0..num_slices {
            let start = i * len / num_slices;
            let end = (i + 1) * len / num_slices;
            slices.push(Arc::new(iter.by_ref().take(end - start).collect()));
        }
        ParallelCollectionRdd { id, slices }
    }
}

impl<T: Data> Encode for ParallelCollectionRdd<T> {
    type Payload = (RddId, Vec<Arc<Vec<T>>>);
    fn payload(&self) -> Self::Payload {
        (self.id, self.slices.clone())
    }
    fn decode((id, slices): Self::Payload, _: &[AnyNode]) -> Result<Self> {
        Ok(ParallelCollectionRdd { id, slices })
    }
    fn into_any(self) -> AnyNode {
        any_rdd::<T>(Arc::new(self))
    }
}

impl<T: Data> RddBase for ParallelCollectionRdd<T> {
    fn id(&self) -> RddId {
        self.id
    }
    fn name(&self) -> &str {
        "parallelize"
    }
    fn num_partitions(&self) -> usize {
        self.slices.len()
    }
    fn dependencies(&self) -> Vec<Dependency> {
        Vec::new()
    }
    fn encode_self(&self) -> Result<EncodedNode> {
        encode_node(self)
    }
}

/// Iterates a shared slice by cloning elements, so the slice is never copied whole.
struct SharedSliceIter<T> {
    data: Arc<Vec<T>>,
    pos: usize,
}

impl<T: Clone> Iterator for SharedSliceIter<T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        let v = self.data.get(self.pos)?.clone();
        self.pos += 1;
        Some(v)
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.data.len() - self.pos;
        (n, Some(n))
    }
}

pub(crate) fn iter_shared<T: Clone + 'static>(data: Arc<Vec<T>>) -> BoxIter<T> {
    boxed(SharedSliceIter { data, pos: 0 })
}

impl<T: Data> Rdd<T> for ParallelCollectionRdd<T> {
    fn compute(&self, partition: usize, ctx: &TaskContext) -> Result<BoxIter<T>> {
        let data = self.slices[partition].clone();
        Ok(boxed(ctx.interruptible(iter_shared(data))))
    }
}

/// `range(start, end, step, n)`: the arithmetic sequence split into `n`
/// contiguous slices of (almost) equal length, as Spark's `SparkContext.range`.
pub struct RangeRdd {
    id: RddId,
    start: i64,
    step: i64,
    count: u64,
    num_slices: usize,
}

impl RangeRdd {
    pub fn new(id: RddId, start: i64, end: i64, step: i64, num_slices: usize) -> Result<Self> {
        if step == 0 {
            return Err(ember_common::Error::InvalidArgument("step cannot be 0".into()));
        }
        let span = end as i128 - start as i128;
        let count = if (span > 0 && step > 0) || (span < 0 && step < 0) {
            ((span.abs() + step.unsigned_abs() as i128 - 1) / step.unsigned_abs() as i128) as u64
        } else {
            0
        };
        Ok(RangeRdd { id, start, step, count, num_slices })
    }

    fn slice_bounds(&self, i: usize) -> (u64, u64) {
        let n = self.num_slices as u128;
        let c = self.count as u128;
        ((c * i as u128 / n) as u64, (c * (i as u128 + 1) / n) as u64)
    }
}

impl Encode for RangeRdd {
    type Payload = (RddId, i64, i64, u64, usize);
    fn payload(&self) -> Self::Payload {
        (self.id, self.start, self.step, self.count, self.num_slices)
    }
    fn decode((id, start, step, count, num_slices): Self::Payload, _: &[AnyNode]) -> Result<Self> {
        Ok(RangeRdd { id, start, step, count, num_slices })
    }
    fn into_any(self) -> AnyNode {
        any_rdd::<i64>(Arc::new(self))
    }
}

impl RddBase for RangeRdd {
    fn id(&self) -> RddId {
        self.id
    }
    fn name(&self) -> &str {
        "range"
    }
    fn num_partitions(&self) -> usize {
        self.num_slices
    }
    fn dependencies(&self) -> Vec<Dependency> {
        Vec::new()
    }
    fn encode_self(&self) -> Result<EncodedNode> {
        encode_node(self)
    }
}

impl Rdd<i64> for RangeRdd {
    fn compute(&self, partition: usize, ctx: &TaskContext) -> Result<BoxIter<i64>> {
        let (lo, hi) = self.slice_bounds(partition);
        let (start, step) = (self.start, self.step);
        Ok(boxed(ctx.interruptible((lo..hi).map(move |i| start.wrapping_add((i as i64).wrapping_mul(step))))))
    }
}
