//! The encoding of one `(K, V)` record, with fast paths for byte keys.
//!
//! A record is the postcard encoding of the tuple `(K, V)`, which postcard
//! writes as the key's encoding followed by the value's. serde sees a
//! `Vec<u8>` as a sequence and (de)serializes it one `u8` at a time; for the
//! 100-byte records of a sort that per-byte path was ~13% of the job. Here a
//! `Vec<u8>` field is written and read as one length-prefixed copy instead:
//! the bytes on disk are exactly postcard's (a LEB128 length, then the
//! bytes), so files stay readable by either path, which the tests check.
//!
//! [`sort_prefix`] gives an order-preserving `u64` for byte-like keys, so a
//! sort compares two integers for most pairs instead of chasing both keys'
//! heap buffers (Spark's sort does the same with its prefix comparators).
//!
//! The type checks are `TypeId` comparisons on `'static` types, resolved at
//! compile time for each monomorphized `K` and `V`.

use std::any::{Any, TypeId};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The longest LEB128 encoding of a `u64`.
const MAX_VARINT_LEN: usize = 10;

/// Appends the postcard encoding of `v` to `buf`.
#[inline]
pub(crate) fn put_field<T: Serialize + 'static>(buf: &mut Vec<u8>, v: &T) -> postcard::Result<()> {
    if let Some(bytes) = (v as &dyn Any).downcast_ref::<Vec<u8>>() {
        put_varint(buf, bytes.len() as u64);
        buf.extend_from_slice(bytes);
        return Ok(());
    }
    postcard::to_io(v, &mut *buf).map(|_| ())
}

/// Decodes one `T` from the front of `s`; returns it and the rest of `s`.
#[inline]
pub(crate) fn take_field<T: DeserializeOwned + 'static>(s: &[u8]) -> postcard::Result<(T, &[u8])> {
    if TypeId::of::<T>() == TypeId::of::<Vec<u8>>() {
        let (len, rest) = take_varint(s)?;
        let len = usize::try_from(len).map_err(|_| postcard::Error::DeserializeBadVarint)?;
        if rest.len() < len {
            return Err(postcard::Error::DeserializeUnexpectedEnd);
        }
        let mut out: Option<T> = None;
        if let Some(slot) = (&mut out as &mut dyn Any).downcast_mut::<Option<Vec<u8>>>() {
            *slot = Some(rest[..len].to_vec());
        }
        if let Some(v) = out {
            return Ok((v, &rest[len..]));
        }
    }
    postcard::take_from_bytes(s)
}

/// Decodes one `(K, V)` record from the front of `s`.
#[inline]
pub(crate) fn take_record<K, V>(s: &[u8]) -> postcard::Result<((K, V), &[u8])>
where
    K: DeserializeOwned + 'static,
    V: DeserializeOwned + 'static,
{
    let (k, rest) = take_field::<K>(s)?;
    let (v, rest) = take_field::<V>(rest)?;
    Ok(((k, v), rest))
}

fn put_varint(buf: &mut Vec<u8>, mut x: u64) {
    while x >= 0x80 {
        buf.push((x as u8) | 0x80);
        x >>= 7;
    }
    buf.push(x as u8);
}

/// LEB128 as postcard reads it: at most 10 bytes, no bits beyond 64.
fn take_varint(s: &[u8]) -> postcard::Result<(u64, &[u8])> {
    let mut x = 0u64;
    for (i, &b) in s.iter().take(MAX_VARINT_LEN).enumerate() {
        let bits = u64::from(b & 0x7f);
        if i == MAX_VARINT_LEN - 1 && b > 1 {
            return Err(postcard::Error::DeserializeBadVarint);
        }
        x |= bits << (7 * i);
        if b & 0x80 == 0 {
            return Ok((x, &s[i + 1..]));
        }
    }
    if s.len() < MAX_VARINT_LEN {
        Err(postcard::Error::DeserializeUnexpectedEnd)
    } else {
        Err(postcard::Error::DeserializeBadVarint)
    }
}

/// The bytes of a byte-like value (`Vec<u8>` or `String`); `None` for
/// every other type. The sort prefix and the heap prefetch both rest on it.
#[inline(always)]
pub(crate) fn byte_like<T: 'static>(v: &T) -> Option<&[u8]> {
    let any = v as &dyn Any;
    match any.downcast_ref::<Vec<u8>>() {
        Some(b) => Some(b),
        None => any.downcast_ref::<String>().map(String::as_bytes),
    }
}

/// Whether [`byte_like`] gives bytes for values of type `T`.
#[inline(always)]
pub(crate) fn is_byte_like<T: 'static>() -> bool {
    TypeId::of::<T>() == TypeId::of::<Vec<u8>>() || TypeId::of::<T>() == TypeId::of::<String>()
}

/// For byte-like keys, the first 8 bytes as a big-endian integer,
/// zero-padded: `a < b` implies `sort_prefix(a) <= sort_prefix(b)`, so equal
/// prefixes fall back to the full comparison. `None` for every other key type.
#[inline]
pub fn sort_prefix<K: 'static>(k: &K) -> Option<u64> {
    let bytes = byte_like(k)?;
    let mut p = [0u8; 8];
    let n = bytes.len().min(8);
    p[..n].copy_from_slice(&bytes[..n]);
    Some(u64::from_be_bytes(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn put_record<K: Serialize + 'static, V: Serialize + 'static>(k: &K, v: &V) -> Vec<u8> {
        let mut buf = Vec::new();
        put_field(&mut buf, k).unwrap();
        put_field(&mut buf, v).unwrap();
        buf
    }

    proptest! {
        #[test]
        fn byte_fields_are_postcards_encoding(k in proptest::collection::vec(any::<u8>(), 0..300), v in any::<u64>()) {
            let fast = put_record(&k, &v);
            prop_assert_eq!(&fast, &postcard::to_stdvec(&(&k, v)).unwrap());
            let ((k2, v2), rest) = take_record::<Vec<u8>, u64>(&fast).unwrap();
            prop_assert_eq!((k2, v2), (k, v));
            prop_assert!(rest.is_empty());
        }

        #[test]
        fn other_fields_round_trip(k in ".{0,20}", v in proptest::collection::vec(any::<i32>(), 0..20)) {
            let bytes = put_record(&k, &v);
            prop_assert_eq!(&bytes, &postcard::to_stdvec(&(&k, &v)).unwrap());
            let ((k2, v2), _) = take_record::<String, Vec<i32>>(&bytes).unwrap();
            prop_assert_eq!((k2, v2), (k, v));
        }

        #[test]
        fn varints_match_postcard(x in any::<u64>()) {
            let mut buf = Vec::new();
            put_varint(&mut buf, x);
            prop_assert_eq!(&buf, &postcard::to_stdvec(&x).unwrap());
            prop_assert_eq!(take_varint(&buf).unwrap(), (x, &[][..]));
        }

        #[test]
        fn truncated_or_garbage_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let fast = take_field::<Vec<u8>>(&bytes);
            let slow = postcard::take_from_bytes::<Vec<u8>>(&bytes);
            prop_assert_eq!(fast.is_ok(), slow.is_ok());
            if let (Ok(a), Ok(b)) = (fast, slow) {
                prop_assert_eq!(a, b);
            }
        }

        #[test]
        fn prefixes_preserve_byte_order(a in proptest::collection::vec(any::<u8>(), 0..12), b in proptest::collection::vec(any::<u8>(), 0..12)) {
            let (pa, pb) = (sort_prefix(&a).unwrap(), sort_prefix(&b).unwrap());
            if a < b {
                prop_assert!(pa <= pb);
            }
            if pa < pb {
                prop_assert!(a < b);
            }
        }
    }

    #[test]
    fn overlong_varints_are_refused() {
        let eleven = [0x80u8; 10];
        assert!(take_varint(&eleven).is_err());
        let mut too_big = vec![0xffu8; 9];
        too_big.push(0x02);
        assert!(take_varint(&too_big).is_err());
        assert_eq!(take_varint(&[0x80, 0x01]).unwrap().0, 128);
        assert!(take_field::<Vec<u8>>(&[5, 1, 2]).is_err());
    }

    #[test]
    fn only_byte_like_keys_have_prefixes() {
        assert!(is_byte_like::<Vec<u8>>() && is_byte_like::<String>() && !is_byte_like::<u64>());
        assert_eq!(byte_like(&vec![1u8, 2]), Some(&[1u8, 2][..]));
        assert_eq!(byte_like(&"ab".to_string()), Some(&b"ab"[..]));
        assert_eq!(byte_like(&7u64), None);
        assert_eq!(sort_prefix(&"ab".to_string()), Some(0x6162_0000_0000_0000));
        assert_eq!(sort_prefix(&7u64), None);
    }
}
