//! The iterator one node of a stage hands to the next.
//!
//! A stage's nodes are type-erased, so each boundary between them is a
//! virtual call. Made once per record, that call costs more than the work of
//! a light transformation: the caller reloads the record the callee has just
//! stored, and the store cannot be forwarded. Measured on wordcount, removing
//! one of its three per-record boundaries saved about 9% of the whole job.
//!
//! So a [`PartitionIter`] is an `Iterator` that can also hand over up to a
//! batch of records at once ([`PartitionIter::next_batch`]). The adapters
//! here — [`MapBatches`], [`FilterBatches`], [`FlatMapBatches`] and
//! [`ChainBatches`] — pass batches through: each pulls a batch from its
//! parent with one virtual call and runs its function over it in a
//! monomorphized loop. The shuffle's writers pull their input the same way.
//! Any other iterator joins a pipeline through [`boxed`], which fills a
//! batch by calling the iterator's own `next` in a monomorphized loop.

/// A partition's records: an iterator that can also yield a batch at a time.
pub trait PartitionIter: Iterator {
    /// Appends up to `max` (at least 1) next records to `out`. Appends none
    /// only when the records have ended.
    fn next_batch(&mut self, out: &mut Vec<Self::Item>, max: usize);
}

/// The iterator a partition computes to. Not `Send`: a task's pipeline lives
/// and dies on one executor thread.
pub type BoxIter<T> = Box<dyn PartitionIter<Item = T>>;

impl<P: PartitionIter + ?Sized> PartitionIter for Box<P> {
    #[inline]
    fn next_batch(&mut self, out: &mut Vec<Self::Item>, max: usize) {
        (**self).next_batch(out, max)
    }
}

/// Boxes any iterator as a partition's records, handed over one at a time.
pub fn boxed<I: Iterator + 'static>(iter: I) -> BoxIter<I::Item> {
    Box::new(OneByOne(iter))
}

/// See [`boxed`].
pub struct OneByOne<I>(I);

impl<I: Iterator> Iterator for OneByOne<I> {
    type Item = I::Item;
    #[inline]
    fn next(&mut self) -> Option<I::Item> {
        self.0.next()
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
    fn fold<B, F: FnMut(B, I::Item) -> B>(self, init: B, f: F) -> B {
        self.0.fold(init, f)
    }
}

impl<I: Iterator> PartitionIter for OneByOne<I> {
    fn next_batch(&mut self, out: &mut Vec<I::Item>, max: usize) {
        for x in self.0.by_ref().take(max) {
            out.push(x);
        }
    }
}

/// `map` over a partition, a batch at a time.
pub struct MapBatches<T, F> {
    parent: BoxIter<T>,
    f: F,
    buf: Vec<T>,
}

impl<T, F> MapBatches<T, F> {
    pub fn new<U>(parent: BoxIter<T>, f: F) -> Self
    where
        F: FnMut(T) -> U,
    {
        MapBatches { parent, f, buf: Vec::new() }
    }
}

impl<T, U, F: FnMut(T) -> U> Iterator for MapBatches<T, F> {
    type Item = U;
    #[inline]
    fn next(&mut self) -> Option<U> {
        self.parent.next().map(&mut self.f)
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.parent.size_hint()
    }
}

impl<T, U, F: FnMut(T) -> U> PartitionIter for MapBatches<T, F> {
    fn next_batch(&mut self, out: &mut Vec<U>, max: usize) {
        self.parent.next_batch(&mut self.buf, max);
        out.extend(self.buf.drain(..).map(&mut self.f));
    }
}

/// `filter` over a partition, a batch at a time.
pub struct FilterBatches<T, F> {
    parent: BoxIter<T>,
    f: F,
    buf: Vec<T>,
}

impl<T, F> FilterBatches<T, F> {
    pub fn new(parent: BoxIter<T>, f: F) -> Self
    where
        F: FnMut(&T) -> bool,
    {
        FilterBatches { parent, f, buf: Vec::new() }
    }
}

impl<T, F: FnMut(&T) -> bool> Iterator for FilterBatches<T, F> {
    type Item = T;
    #[inline]
    fn next(&mut self) -> Option<T> {
        loop {
            let x = self.parent.next()?;
            if (self.f)(&x) {
                return Some(x);
            }
        }
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, self.parent.size_hint().1)
    }
}

impl<T, F: FnMut(&T) -> bool> PartitionIter for FilterBatches<T, F> {
    fn next_batch(&mut self, out: &mut Vec<T>, max: usize) {
        let start = out.len();
        loop {
            self.parent.next_batch(&mut self.buf, max);
            if self.buf.is_empty() {
                return;
            }
            let f = &mut self.f;
            out.extend(self.buf.drain(..).filter(|x| f(x)));
            if out.len() > start {
                return;
            }
        }
    }
}

/// `flat_map` over a partition, a batch at a time. Inputs are pulled a few
/// at a time and an input's outputs may straddle batches, so a batch never
/// exceeds `max` records however many one input expands to.
pub struct FlatMapBatches<T, I: IntoIterator, F> {
    parent: BoxIter<T>,
    f: F,
    /// Pulled inputs not yet expanded, last first.
    inputs: Vec<T>,
    /// The expansion being read.
    front: Option<I::IntoIter>,
}

/// Inputs pulled at a time: a flat-mapped input usually expands to several outputs.
const FLAT_MAP_INPUTS: usize = 16;

impl<T, I: IntoIterator, F> FlatMapBatches<T, I, F> {
    pub fn new(parent: BoxIter<T>, f: F) -> Self
    where
        F: FnMut(T) -> I,
    {
        FlatMapBatches { parent, f, inputs: Vec::new(), front: None }
    }
}

impl<T, I: IntoIterator, F: FnMut(T) -> I> Iterator for FlatMapBatches<T, I, F> {
    type Item = I::Item;
    #[inline]
    fn next(&mut self) -> Option<I::Item> {
        loop {
            if let Some(front) = &mut self.front {
                if let Some(x) = front.next() {
                    return Some(x);
                }
                self.front = None;
            }
            let x = match self.inputs.pop() {
                Some(x) => x,
                None => self.parent.next()?,
            };
            self.front = Some((self.f)(x).into_iter());
        }
    }
}

impl<T, I: IntoIterator, F: FnMut(T) -> I> PartitionIter for FlatMapBatches<T, I, F> {
    fn next_batch(&mut self, out: &mut Vec<I::Item>, max: usize) {
        let end = out.len() + max;
        loop {
            if let Some(front) = &mut self.front {
                while out.len() < end {
                    match front.next() {
                        Some(x) => out.push(x),
                        None => break,
                    }
                }
                if out.len() == end {
                    return;
                }
                self.front = None;
            }
            if self.inputs.is_empty() {
                self.parent.next_batch(&mut self.inputs, FLAT_MAP_INPUTS);
                if self.inputs.is_empty() {
                    return;
                }
                self.inputs.reverse();
            }
            let x = self.inputs.pop().expect("inputs refilled above");
            self.front = Some((self.f)(x).into_iter());
        }
    }
}

/// One partition's records followed by another's, a batch at a time.
pub struct ChainBatches<T> {
    first: Option<BoxIter<T>>,
    second: BoxIter<T>,
}

impl<T> ChainBatches<T> {
    pub fn new(first: BoxIter<T>, second: BoxIter<T>) -> Self {
        ChainBatches { first: Some(first), second }
    }
}

impl<T> Iterator for ChainBatches<T> {
    type Item = T;
    #[inline]
    fn next(&mut self) -> Option<T> {
        if let Some(first) = &mut self.first {
            match first.next() {
                Some(x) => return Some(x),
                None => self.first = None,
            }
        }
        self.second.next()
    }
}

impl<T> PartitionIter for ChainBatches<T> {
    fn next_batch(&mut self, out: &mut Vec<T>, max: usize) {
        if let Some(first) = &mut self.first {
            let before = out.len();
            first.next_batch(out, max);
            if out.len() > before {
                return;
            }
            self.first = None;
        }
        self.second.next_batch(out, max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Drains `it` in batches of `max`, checking each batch's size.
    fn drain_batches<T>(mut it: BoxIter<T>, max: usize) -> Vec<T> {
        let mut all = Vec::new();
        loop {
            let mut batch = Vec::new();
            it.next_batch(&mut batch, max);
            assert!(batch.len() <= max, "batch of {} over {max}", batch.len());
            if batch.is_empty() {
                return all;
            }
            all.extend(batch);
        }
    }

    /// Drains `it` alternating single records and batches.
    fn drain_mixed<T>(mut it: BoxIter<T>, max: usize) -> Vec<T> {
        let mut all = Vec::new();
        loop {
            match it.next() {
                Some(x) => all.push(x),
                None => return all,
            }
            let before = all.len();
            it.next_batch(&mut all, max);
            if all.len() == before {
                return all;
            }
        }
    }

    fn pipeline(input: Vec<u32>) -> BoxIter<u32> {
        let half = input.len() / 2;
        let (a, b) = (input[..half].to_vec(), input[half..].to_vec());
        let it = Box::new(ChainBatches::new(boxed(a.into_iter()), boxed(b.into_iter())));
        let it = Box::new(MapBatches::new(it, |x: u32| x.wrapping_mul(3)));
        let it = Box::new(FilterBatches::new(it, |x: &u32| x % 4 != 1));
        Box::new(FlatMapBatches::new(it, |x: u32| (0..x % 5).map(move |i| x + i)))
    }

    fn expected(input: &[u32]) -> Vec<u32> {
        input
            .iter()
            .map(|x| x.wrapping_mul(3))
            .filter(|x| x % 4 != 1)
            .flat_map(|x| (0..x % 5).map(move |i| x + i))
            .collect()
    }

    proptest! {
        /// Batches, single records and any mix of them yield what std's adapters do.
        #[test]
        fn adapters_match_std(input in proptest::collection::vec(any::<u32>(), 0..300), max in 1usize..70) {
            let want = expected(&input);
            prop_assert_eq!(drain_batches(pipeline(input.clone()), max), want.clone());
            prop_assert_eq!(pipeline(input.clone()).collect::<Vec<_>>(), want.clone());
            prop_assert_eq!(drain_mixed(pipeline(input), max), want);
        }
    }

    #[test]
    fn one_input_expanding_past_a_batch_is_split() {
        let it: BoxIter<u32> = Box::new(FlatMapBatches::new(boxed(vec![1000u32, 3].into_iter()), |n: u32| 0..n));
        let batches = {
            let mut it = it;
            let mut sizes = Vec::new();
            loop {
                let mut b = Vec::new();
                it.next_batch(&mut b, 64);
                if b.is_empty() {
                    break sizes;
                }
                sizes.push(b.len());
            }
        };
        assert_eq!(batches.iter().sum::<usize>(), 1003);
        assert!(batches.iter().all(|&n| n <= 64));
    }

    #[test]
    fn filter_batch_is_empty_only_at_the_end() {
        // Only the last of 1000 records passes: batches of 8 must skip ahead, not end early.
        let mut it: BoxIter<u32> = Box::new(FilterBatches::new(boxed(0..1000u32), |x: &u32| *x == 999));
        let mut b = Vec::new();
        it.next_batch(&mut b, 8);
        assert_eq!(b, vec![999]);
        b.clear();
        it.next_batch(&mut b, 8);
        assert!(b.is_empty());
    }
}
