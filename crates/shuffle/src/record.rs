//! The encoding of one `(K, V)` record, with fast paths for common fields.
//!
//! A record is the postcard encoding of the tuple `(K, V)`, which postcard
//! writes as the key's encoding followed by the value's. serde sees a
//! `Vec<u8>` as a sequence and (de)serializes it one `u8` at a time; for the
//! 100-byte records of a sort that per-byte path was ~13% of the job. And
//! postcard's writer into a `Vec` encodes an integer's varint into a scratch
//! array and then copies it with a call to `memcpy` of 1-10 bytes: for
//! `(u64, i64)` records those calls were 9% of an aggregation's CPU.
//! So `Vec<u8>`, `String`, `u64`, `i64`, `u32`, `i32`, `usize` and `f64`
//! fields are written and read here directly — a LEB128 length and one copy
//! for bytes, a varint (zigzag for signed) for integers, 8 little-endian
//! bytes for `f64`. The bytes are exactly postcard's, and so are the inputs
//! refused, so files stay readable by either path; the tests check both
//! against postcard on arbitrary bytes.
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

/// The longest LEB128 encoding of a `u64`, and of a `u32`.
const MAX_VARINT_LEN: usize = 10;
const MAX_VARINT32_LEN: usize = 5;

/// Appends the postcard encoding of `v` to `buf`.
#[inline]
pub(crate) fn put_field<T: Serialize + 'static>(buf: &mut Vec<u8>, v: &T) -> postcard::Result<()> {
    let any = v as &dyn Any;
    if let Some(bytes) = any.downcast_ref::<Vec<u8>>() {
        put_varint(buf, bytes.len() as u64);
        buf.extend_from_slice(bytes);
    } else if let Some(s) = any.downcast_ref::<String>() {
        put_varint(buf, s.len() as u64);
        buf.extend_from_slice(s.as_bytes());
    } else if let Some(&x) = any.downcast_ref::<u64>() {
        put_varint(buf, x);
    } else if let Some(&x) = any.downcast_ref::<usize>() {
        put_varint(buf, x as u64);
    } else if let Some(&x) = any.downcast_ref::<i64>() {
        put_varint(buf, zigzag(x));
    } else if let Some(&x) = any.downcast_ref::<u32>() {
        put_varint(buf, u64::from(x));
    } else if let Some(&x) = any.downcast_ref::<i32>() {
        put_varint(buf, zigzag(i64::from(x)));
    } else if let Some(&x) = any.downcast_ref::<f64>() {
        buf.extend_from_slice(&x.to_bits().to_le_bytes());
    } else {
        postcard::to_io(v, &mut *buf)?;
    }
    Ok(())
}

/// Decodes one `T` from the front of `s`; returns it and the rest of `s`.
#[inline]
pub(crate) fn take_field<T: DeserializeOwned + 'static>(s: &[u8]) -> postcard::Result<(T, &[u8])> {
    if same::<T, Vec<u8>>() || same::<T, String>() {
        let (bytes, rest) = take_bytes(s)?;
        // `None` only for a `String` whose bytes are not UTF-8.
        let v = byte_like_from::<T>(bytes).ok_or(postcard::Error::DeserializeBadUtf8)?;
        return Ok((v, rest));
    }
    if same::<T, u64>() || same::<T, i64>() || same::<T, usize>() {
        let (x, rest) = take_varint(s, MAX_VARINT_LEN)?;
        let v = if same::<T, i64>() {
            cast::<T, i64>(unzigzag(x))
        } else if same::<T, usize>() {
            cast::<T, usize>(usize::try_from(x).map_err(|_| postcard::Error::DeserializeBadVarint)?)
        } else {
            cast::<T, u64>(x)
        };
        return Ok((v.expect("T was checked to be this type"), rest));
    }
    if same::<T, u32>() || same::<T, i32>() {
        let (x, rest) = take_varint(s, MAX_VARINT32_LEN)?;
        let x = u32::try_from(x).map_err(|_| postcard::Error::DeserializeBadVarint)?;
        let v = if same::<T, i32>() { cast::<T, i32>(unzigzag(u64::from(x)) as i32) } else { cast::<T, u32>(x) };
        return Ok((v.expect("T was checked to be this type"), rest));
    }
    if same::<T, f64>() {
        let Some((bytes, rest)) = s.split_first_chunk::<8>() else {
            return Err(postcard::Error::DeserializeUnexpectedEnd);
        };
        let v = cast::<T, f64>(f64::from_bits(u64::from_le_bytes(*bytes)));
        return Ok((v.expect("T was checked to be this type"), rest));
    }
    postcard::take_from_bytes(s)
}

/// The bytes of a byte-like field at the front of `s` (a LEB128 length,
/// then the bytes), without copying them; and the rest of `s`.
#[inline]
pub(crate) fn take_bytes(s: &[u8]) -> postcard::Result<(&[u8], &[u8])> {
    let (len, rest) = take_varint(s, MAX_VARINT_LEN)?;
    let len = usize::try_from(len).map_err(|_| postcard::Error::DeserializeBadVarint)?;
    if rest.len() < len {
        return Err(postcard::Error::DeserializeUnexpectedEnd);
    }
    Ok(rest.split_at(len))
}

/// A byte-like `T` (`Vec<u8>` or `String`) made from `bytes`; `None` when
/// `T` is neither, or a `String` and `bytes` are not UTF-8.
#[inline]
pub(crate) fn byte_like_from<T: 'static>(bytes: &[u8]) -> Option<T> {
    if same::<T, String>() {
        let s = std::str::from_utf8(bytes).ok()?;
        cast::<T, String>(s.to_owned())
    } else {
        cast::<T, Vec<u8>>(bytes.to_vec())
    }
}

/// [`sort_prefix`] of a byte-like key's bytes.
#[inline]
pub(crate) fn bytes_prefix(bytes: &[u8]) -> u64 {
    let mut p = [0u8; 8];
    let n = bytes.len().min(8);
    p[..n].copy_from_slice(&bytes[..n]);
    u64::from_be_bytes(p)
}

/// Whether `T` and `U` are one type (a constant after monomorphization).
#[inline(always)]
fn same<T: 'static, U: 'static>() -> bool {
    TypeId::of::<T>() == TypeId::of::<U>()
}

/// `u` as a `T`, when `T` is `U`; compiles to a move.
#[inline(always)]
fn cast<T: 'static, U: 'static>(u: U) -> Option<T> {
    let mut slot = Some(u);
    (&mut slot as &mut dyn Any).downcast_mut::<Option<T>>().and_then(Option::take)
}

/// Postcard's signed-integer mapping: 0, -1, 1, -2, ... to 0, 1, 2, 3, ...
#[inline(always)]
fn zigzag(x: i64) -> u64 {
    ((x << 1) ^ (x >> 63)) as u64
}

#[inline(always)]
fn unzigzag(x: u64) -> i64 {
    ((x >> 1) as i64) ^ -((x & 1) as i64)
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

/// LEB128 as postcard reads it: at most `max_len` bytes (10 for a `u64`, 5
/// for a `u32`), no bits beyond 64; a `u32`'s range is the caller's check.
#[inline]
fn take_varint(s: &[u8], max_len: usize) -> postcard::Result<(u64, &[u8])> {
    let mut x = 0u64;
    for (i, &b) in s.iter().take(max_len).enumerate() {
        let bits = u64::from(b & 0x7f);
        if i == MAX_VARINT_LEN - 1 && b > 1 {
            return Err(postcard::Error::DeserializeBadVarint);
        }
        x |= bits << (7 * i);
        if b & 0x80 == 0 {
            return Ok((x, &s[i + 1..]));
        }
    }
    if s.len() < max_len {
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
    byte_like(k).map(bytes_prefix)
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
            prop_assert_eq!(take_varint(&buf, MAX_VARINT_LEN).unwrap(), (x, &[][..]));
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
        fn scalar_and_string_fields_are_postcards_encoding(
            a in any::<u64>(), b in any::<i64>(), c in any::<u32>(), d in any::<i32>(),
            e in any::<usize>(), f in any::<f64>(), g in "\\PC{0,30}",
        ) {
            let mut fast = Vec::new();
            put_field(&mut fast, &a).unwrap();
            put_field(&mut fast, &b).unwrap();
            put_field(&mut fast, &c).unwrap();
            put_field(&mut fast, &d).unwrap();
            put_field(&mut fast, &e).unwrap();
            put_field(&mut fast, &f).unwrap();
            put_field(&mut fast, &g).unwrap();
            prop_assert_eq!(&fast, &postcard::to_stdvec(&(a, b, c, d, e, f, &g)).unwrap());
            let (a2, rest) = take_field::<u64>(&fast).unwrap();
            let (b2, rest) = take_field::<i64>(rest).unwrap();
            let (c2, rest) = take_field::<u32>(rest).unwrap();
            let (d2, rest) = take_field::<i32>(rest).unwrap();
            let (e2, rest) = take_field::<usize>(rest).unwrap();
            let (f2, rest) = take_field::<f64>(rest).unwrap();
            let (g2, rest) = take_field::<String>(rest).unwrap();
            prop_assert_eq!((a2, b2, c2, d2, e2, f2.to_bits(), g2), (a, b, c, d, e, f.to_bits(), g));
            prop_assert!(rest.is_empty());
        }

        /// On any bytes the fast paths accept and refuse exactly what
        /// postcard does, and read the same value and length.
        #[test]
        fn fast_paths_decode_like_postcard(bytes in proptest::collection::vec(
            prop_oneof![Just(0x00u8), Just(0x01), Just(0x0f), Just(0x10), Just(0x7f), Just(0x80), Just(0xff), any::<u8>()],
            0..16,
        )) {
            agree_all(&bytes)?;
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

    /// Every fast-path type agrees with postcard on `bytes`.
    fn agree_all(bytes: &[u8]) -> Result<(), TestCaseError> {
        fn agree<T: DeserializeOwned + PartialEq + std::fmt::Debug + 'static>(
            bytes: &[u8],
        ) -> Result<(), TestCaseError> {
            let fast = take_field::<T>(bytes);
            let slow = postcard::take_from_bytes::<T>(bytes);
            match (fast, slow) {
                (Ok((a, ra)), Ok((b, rb))) => {
                    prop_assert_eq!(a, b);
                    prop_assert_eq!(ra.len(), rb.len());
                }
                (Err(_), Err(_)) => {}
                (fast, slow) => prop_assert!(false, "{bytes:x?}: fast {:?} against postcard {:?}", fast, slow),
            }
            Ok(())
        }
        agree::<u64>(bytes)?;
        agree::<i64>(bytes)?;
        agree::<u32>(bytes)?;
        agree::<i32>(bytes)?;
        agree::<usize>(bytes)?;
        agree::<String>(bytes)?;
        agree::<Vec<u8>>(bytes)?;
        let fast = take_field::<f64>(bytes).map(|(x, r)| (x.to_bits(), r.len()));
        let slow = postcard::take_from_bytes::<f64>(bytes).map(|(x, r)| (x.to_bits(), r.len()));
        prop_assert_eq!(fast.ok(), slow.ok());
        Ok(())
    }

    #[test]
    fn overlong_varints_are_refused() {
        let eleven = [0x80u8; 10];
        assert!(take_varint(&eleven, MAX_VARINT_LEN).is_err());
        let mut too_big = vec![0xffu8; 9];
        too_big.push(0x02);
        assert!(take_varint(&too_big, MAX_VARINT_LEN).is_err());
        assert_eq!(take_varint(&[0x80, 0x01], MAX_VARINT_LEN).unwrap().0, 128);
        assert!(take_field::<Vec<u8>>(&[5, 1, 2]).is_err());
    }

    /// The limits random bytes rarely reach: the longest varints of each
    /// width, one past them, over-long zero encodings, invalid UTF-8.
    #[test]
    fn edge_encodings_decode_like_postcard() {
        let cases: [&[u8]; 12] = [
            &[0xff, 0xff, 0xff, 0xff, 0x0f],                               // u32::MAX
            &[0xff, 0xff, 0xff, 0xff, 0x10],                               // 2^32: too big for a u32
            &[0x80, 0x80, 0x80, 0x80, 0x80, 0x00],                         // zero in six bytes
            &[0x80, 0x80, 0x80, 0x80, 0x00],                               // zero in five bytes
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01], // u64::MAX
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02], // 2^64
            &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00],
            &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00],
            &[0x02, 0xc3, 0x28], // invalid UTF-8
            &[0x02, 0xc3, 0xa9], // "é"
            &[0x07, 1, 2, 3, 4, 5, 6, 7],
            &[],
        ];
        for bytes in cases {
            agree_all(bytes).unwrap();
        }
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
