//! Sorting records whose key and value are both byte-like (`Vec<u8>` or
//! `String`) in their encoded form — a terasort's records.
//!
//! Decoding each record into a `(K, V)` before sorting puts every key and
//! every value in its own heap allocation, in arrival order. Handing them
//! out in key order then touches a record slot, a key buffer and a value
//! buffer at three unrelated places per record: in a 1 GB sort, 10% of the
//! CPU was `InOrder::next` stalled on those misses, besides two allocations
//! per record while reading. Here a reduce partition's blocks are copied
//! as they are into 1 MiB chunks, each record is indexed by its key's 8-byte
//! prefix and its place, the index is sorted, and records are decoded only
//! as they are handed out, in key order: one place in memory per record,
//! and allocations that reuse what the consumer has just freed. (Chunks,
//! not one growing buffer: no copying as it grows, and no memory reserved
//! past the last chunk — one buffer doubled its way to twice the data.)
//!
//! Every record is checked when its block is added (lengths, and UTF-8 for
//! `String` fields), so handing out cannot fail. A spilled run is written
//! record by record in the encoded form it arrived in, which is the form
//! every other reader of spill files expects.

use std::io::Write;
use std::marker::PhantomData;

use crate::error::Result;
use crate::format::BlockWriter;
use crate::prefetch::prefetch;
use crate::record::{byte_like_from, bytes_prefix, is_byte_like, take_bytes};

/// How many records ahead of the consumer [`EncodedRun`] prefetches.
const PREFETCH_AHEAD: usize = 8;

/// Bytes per chunk of encoded records (larger blocks get a chunk each).
const CHUNK: usize = 1 << 20;

/// Where a record is: (key prefix, chunk, offset in the chunk).
type Slot = (u64, u32, u32);

/// Whether records of this type are sorted by [`EncodedRun`].
pub(crate) fn sorts_encoded<K: 'static, V: 'static>() -> bool {
    is_byte_like::<K>() && is_byte_like::<V>()
}

/// Encoded records, an index of them, and once sorted, an iterator over
/// them in key order.
pub(crate) struct EncodedRun<K, V> {
    /// Whole blocks of encoded records.
    chunks: Vec<Vec<u8>>,
    /// One per record.
    index: Vec<Slot>,
    /// The next position in `index` to hand out.
    pos: usize,
    _t: PhantomData<fn() -> (K, V)>,
}

impl<K: 'static, V: 'static> EncodedRun<K, V> {
    pub(crate) fn new() -> Self {
        debug_assert!(sorts_encoded::<K, V>());
        EncodedRun { chunks: Vec::new(), index: Vec::new(), pos: 0, _t: PhantomData }
    }

    /// Adds a block's records. On an undecodable record nothing of the block
    /// is kept and the error says at which byte of the block it starts.
    pub(crate) fn push_block(&mut self, block: &[u8]) -> std::result::Result<(), String> {
        let fits = self.chunks.last().is_some_and(|c| c.capacity() - c.len() >= block.len());
        if !fits {
            self.chunks.push(Vec::with_capacity(CHUNK.max(block.len())));
        }
        let chunk = u32::try_from(self.chunks.len() - 1).map_err(|_| "too many chunks".to_string())?;
        let base = self.chunks.last().map_or(0, Vec::len);
        let indexed = self.index.len();
        let mut at = 0;
        while at < block.len() {
            match record_at::<K, V>(&block[at..], true) {
                Ok((key, _, len)) => {
                    // A chunk holds at most max(CHUNK, one block) bytes.
                    let offset = u32::try_from(base + at).expect("offsets within a chunk fit a u32");
                    self.index.push((bytes_prefix(key), chunk, offset));
                    at += len;
                }
                Err(e) => {
                    self.index.truncate(indexed);
                    return Err(format!("undecodable record at byte {at}: {e}"));
                }
            }
        }
        self.chunks.last_mut().expect("a chunk with room").extend_from_slice(block);
        Ok(())
    }

    /// The encoded bytes from the record in `slot` to the end of its chunk.
    #[inline]
    fn bytes_at(&self, slot: &Slot) -> &[u8] {
        &self.chunks[slot.1 as usize][slot.2 as usize..]
    }

    /// Records held.
    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }

    /// Bytes of memory held (capacities: what the pool must cover).
    pub(crate) fn memory(&self) -> usize {
        self.chunks.iter().map(Vec::capacity).sum::<usize>() + self.index.capacity() * std::mem::size_of::<Slot>()
    }

    /// Orders the index by key; equal prefixes compare the whole keys.
    pub(crate) fn sort(&mut self, ascending: bool) {
        let chunks = &self.chunks;
        let key = |s: &Slot| key_at(&chunks[s.1 as usize][s.2 as usize..]);
        let by_key = |a: &Slot, b: &Slot| a.0.cmp(&b.0).then_with(|| key(a).cmp(key(b)));
        if ascending {
            self.index.sort_unstable_by(by_key);
        } else {
            self.index.sort_unstable_by(|a, b| by_key(b, a));
        }
        self.pos = 0;
    }

    /// Writes the records in index order and empties the run; returns how
    /// many were written. The caller ends the segment.
    pub(crate) fn write_to<W: Write + ?Sized>(&mut self, bw: &mut BlockWriter, out: &mut W) -> Result<u64> {
        for slot in &self.index {
            let rec = self.bytes_at(slot);
            let (_, _, len) = record_at::<K, V>(rec, false).expect("checked when added");
            bw.write_encoded(&rec[..len], out)?;
        }
        let n = self.index.len() as u64;
        // Released, not cleared: the pool's reservation for them is freed.
        self.chunks = Vec::new();
        self.index = Vec::new();
        self.pos = 0;
        Ok(n)
    }
}

impl<K: 'static, V: 'static> Iterator for EncodedRun<K, V> {
    type Item = (K, V);

    #[inline]
    fn next(&mut self) -> Option<(K, V)> {
        let slot = *self.index.get(self.pos)?;
        if let Some(ahead) = self.index.get(self.pos + PREFETCH_AHEAD) {
            // A terasort record (10 + 90 bytes and two lengths) spans two
            // or three cache lines, wherever it starts.
            let rec = self.bytes_at(ahead).as_ptr();
            prefetch(rec);
            prefetch(rec.wrapping_add(64));
            prefetch(rec.wrapping_add(128));
        }
        self.pos += 1;
        let (key, value, _) = record_at::<K, V>(self.bytes_at(&slot), false).expect("checked when added");
        let key = byte_like_from::<K>(key).expect("a byte-like key, checked when added");
        let value = byte_like_from::<V>(value).expect("a byte-like value, checked when added");
        Some((key, value))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.index.len() - self.pos;
        (n, Some(n))
    }
}

/// The key's bytes, the value's bytes and the encoded length of the record
/// at the front of `s`; with `check_utf8`, `String` fields must be UTF-8.
fn record_at<K: 'static, V: 'static>(s: &[u8], check_utf8: bool) -> std::result::Result<(&[u8], &[u8], usize), String> {
    let (key, rest) = take_bytes(s).map_err(|e| e.to_string())?;
    let (value, rest) = take_bytes(rest).map_err(|e| e.to_string())?;
    if check_utf8 {
        check_text::<K>(key)?;
        check_text::<V>(value)?;
    }
    Ok((key, value, s.len() - rest.len()))
}

fn check_text<T: 'static>(bytes: &[u8]) -> std::result::Result<(), String> {
    if std::any::TypeId::of::<T>() == std::any::TypeId::of::<String>() && std::str::from_utf8(bytes).is_err() {
        return Err("a String field is not UTF-8".into());
    }
    Ok(())
}

/// The key's bytes of the (checked) record at the front of `s`.
#[inline]
fn key_at(s: &[u8]) -> &[u8] {
    take_bytes(s).expect("checked when added").0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::append_record;
    use proptest::prelude::*;

    fn block<K: serde::Serialize + 'static, V: serde::Serialize + 'static>(recs: &[(K, V)]) -> Vec<u8> {
        let mut b = Vec::new();
        for (k, v) in recs {
            append_record(&mut b, k, v).unwrap();
        }
        b
    }

    proptest! {
        #[test]
        fn hands_out_records_in_key_order(
            blocks in proptest::collection::vec(
                proptest::collection::vec((proptest::collection::vec(any::<u8>(), 0..12), proptest::collection::vec(any::<u8>(), 0..20)), 0..40),
                0..5,
            ),
            ascending in any::<bool>(),
        ) {
            let mut run = EncodedRun::<Vec<u8>, Vec<u8>>::new();
            let mut all = Vec::new();
            for b in &blocks {
                run.push_block(&block(b)).unwrap();
                all.extend(b.iter().cloned());
            }
            prop_assert_eq!(run.len(), all.len());
            run.sort(ascending);
            let got: Vec<(Vec<u8>, Vec<u8>)> = run.collect();
            let mut keys: Vec<&Vec<u8>> = got.iter().map(|r| &r.0).collect();
            let ordered = keys.windows(2).all(|w| if ascending { w[0] <= w[1] } else { w[0] >= w[1] });
            prop_assert!(ordered);
            // The same multiset of records.
            let (mut a, mut b) = (got.clone(), all);
            a.sort();
            b.sort();
            prop_assert_eq!(a, b);
            keys.clear();
        }
    }

    #[test]
    fn strings_are_checked_when_added() {
        let mut run = EncodedRun::<String, String>::new();
        run.push_block(&block(&[("b".to_string(), "x".to_string()), ("a".to_string(), "é".to_string())])).unwrap();
        // A key of bytes 0xc3 0x28: not UTF-8. The whole block is refused.
        let bad = block(&[("c".to_string(), "y".to_string())])
            .into_iter()
            .chain(block(&[(vec![0xc3u8, 0x28], b"z".to_vec())]))
            .collect::<Vec<u8>>();
        let err = run.push_block(&bad).unwrap_err();
        assert!(err.contains("at byte 4") && err.contains("UTF-8"), "{err}");
        assert_eq!(run.len(), 2);
        run.sort(true);
        let got: Vec<(String, String)> = run.collect();
        assert_eq!(got, vec![("a".into(), "é".into()), ("b".into(), "x".into())]);
    }

    #[test]
    fn runs_span_chunks_and_keep_nothing_past_the_last() {
        let mut run = EncodedRun::<Vec<u8>, Vec<u8>>::new();
        let recs: Vec<(Vec<u8>, Vec<u8>)> = (0..40_000u32)
            .map(|i| ((i.wrapping_mul(2_654_435_761)).to_be_bytes().to_vec(), vec![i as u8; 90]))
            .collect();
        for b in recs.chunks(600) {
            run.push_block(&block(b)).unwrap();
        }
        assert!(run.chunks.len() >= 3, "{} chunks", run.chunks.len());
        let data: usize = run.chunks.iter().map(Vec::len).sum();
        // At most the last chunk's room and each chunk's tail short of a block (< 60 kB) beyond the data.
        let slack = CHUNK + run.chunks.len() * 60_000 + run.index.capacity() * 16;
        assert!(run.memory() <= data + slack, "{} for {data}", run.memory());
        run.sort(true);
        let got: Vec<(Vec<u8>, Vec<u8>)> = run.collect();
        let mut want = recs;
        want.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn truncated_records_are_refused() {
        let mut run = EncodedRun::<Vec<u8>, Vec<u8>>::new();
        let mut b = block(&[(b"key".to_vec(), b"value".to_vec())]);
        b.pop();
        assert!(run.push_block(&b).unwrap_err().contains("at byte 0"));
        assert_eq!(run.len(), 0);
        assert!(run.chunks.iter().all(Vec::is_empty));
    }

    #[test]
    fn equal_prefixes_compare_whole_keys_and_spills_keep_the_encoding() {
        let recs: Vec<(Vec<u8>, Vec<u8>)> = vec![
            (b"abcdefgh-2".to_vec(), b"2".to_vec()),
            (b"abcdefgh".to_vec(), b"0".to_vec()),
            (b"abcdefgh-1".to_vec(), b"1".to_vec()),
        ];
        let mut run = EncodedRun::<Vec<u8>, Vec<u8>>::new();
        run.push_block(&block(&recs)).unwrap();
        run.sort(true);
        let mut out = Vec::new();
        let mut bw = BlockWriter::new(16, true);
        assert_eq!(run.write_to(&mut bw, &mut out).unwrap(), 3);
        bw.finish_segment(&mut out).unwrap();
        assert_eq!(run.len(), 0);
        let back: Vec<(Vec<u8>, Vec<u8>)> = crate::format::SegmentReader::new(out).collect::<Result<_>>().unwrap();
        assert_eq!(
            back.iter().map(|r| r.1.clone()).collect::<Vec<_>>(),
            vec![b"0".to_vec(), b"1".to_vec(), b"2".to_vec()]
        );
    }
}
