//! Deterministic data generation: a port of the reference generator
//! (`bench/gen_data.rs`) whose output files must be byte-identical to it for
//! the same parameters (see `tests/gen_digests.rs`).
//!
//! * [`gen_words`] writes Zipf-distributed words (`words.txt`) and the oracle
//!   `words.txt.expected` (bytes, lines, words, distinct, top 10).
//! * [`gen_records`] writes gensort-like 100-byte records (`records.bin`) and
//!   `records.bin.expected` (count, bytes, FNV-1a-64 wrapping-sum checksum).
//!
//! [`mix64`] and [`key_of`] are also the in-program generators of the agg,
//! join and pagerank workloads.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

/// The splitmix64 increment ("golden gamma").
pub const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// Default size of `words.txt` (1 GiB).
pub const DEFAULT_WORDS_BYTES: u64 = 1 << 30;
/// Default vocabulary size.
pub const DEFAULT_VOCAB: usize = 100_000;
/// Default Zipf exponent.
pub const DEFAULT_ZIPF_S: f64 = 1.0;
/// Default seed of the words generator.
pub const DEFAULT_WORDS_SEED: u64 = 42;
/// Default number of 100-byte records (1 GB).
pub const DEFAULT_RECORDS: u64 = 10_000_000;
/// Default seed of the records generator.
pub const DEFAULT_RECORDS_SEED: u64 = 7;

/// The splitmix64 output function applied to `x + GOLDEN`.
#[inline]
pub fn mix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(GOLDEN);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `(mix64(x) >> 1) % m`: the key generator of agg, join and pagerank.
#[inline]
pub fn key_of(x: u64, m: u64) -> u64 {
    (mix64(x) >> 1) % m
}

/// FNV-1a, 64 bit.
#[inline]
pub fn fnv1a64(data: &[u8]) -> u64 {
    fnv1a64_update(FNV_OFFSET, data)
}

/// FNV-1a offset basis.
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// Continues an FNV-1a-64 hash over more bytes (so `key` then `payload`
/// hashes like the whole record).
#[inline]
pub fn fnv1a64_update(mut h: u64, data: &[u8]) -> u64 {
    for &b in data {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    #[inline]
    fn next_u64(&mut self) -> u64 {
        let r = mix64(self.state);
        self.state = self.state.wrapping_add(GOLDEN);
        r
    }

    #[inline]
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0f64 / (1u64 << 53) as f64)
    }
}

/// The word of vocabulary rank `r`: a hash-derived prefix of 0..=4 letters,
/// then `r` in base 26 with exactly 4 letters.
pub fn word_for_rank(r: u64) -> Vec<u8> {
    assert!(r < 26 * 26 * 26 * 26, "rank {r} has no 4-letter suffix");
    let h = mix64(r ^ 0x5157_4F52_4453_0000);
    let prefix_len = (h % 5) as usize;
    let mut w = Vec::with_capacity(prefix_len + 4);
    let mut hh = h / 5;
    for _ in 0..prefix_len {
        w.push(b'a' + (hh % 26) as u8);
        hh /= 26;
    }
    let mut suffix = [0u8; 4];
    let mut x = r;
    for slot in suffix.iter_mut().rev() {
        *slot = b'a' + (x % 26) as u8;
        x /= 26;
    }
    w.extend_from_slice(&suffix);
    w
}

/// What [`gen_words`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WordsSummary {
    pub bytes: u64,
    pub lines: u64,
    pub words: u64,
    pub distinct: usize,
}

fn expected_path(out: &Path) -> std::path::PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".expected");
    s.into()
}

/// Writes at least `target` bytes of whole lines of Zipf(`s`) words over a
/// vocabulary of `vocab` words to `out`, and the oracle to `out.expected`.
pub fn gen_words(out: &Path, target: u64, vocab: usize, s: f64, seed: u64) -> std::io::Result<WordsSummary> {
    if vocab == 0 {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "vocabulary must not be empty"));
    }
    let mut cdf = Vec::with_capacity(vocab);
    let mut acc = 0.0f64;
    for r in 0..vocab {
        acc += 1.0 / ((r + 1) as f64).powf(s);
        cdf.push(acc);
    }
    let total = acc;
    for c in cdf.iter_mut() {
        *c /= total;
    }
    let words: Vec<Vec<u8>> = (0..vocab as u64).map(word_for_rank).collect();
    let mut counts = vec![0u64; vocab];
    let mut rng = SplitMix64::new(seed);
    let mut w = BufWriter::with_capacity(1 << 20, File::create(out)?);
    let (mut bytes, mut lines, mut nwords) = (0u64, 0u64, 0u64);
    let mut line: Vec<u8> = Vec::with_capacity(512);
    while bytes < target {
        line.clear();
        let n = 1 + (rng.next_u64() % 19) as usize;
        for i in 0..n {
            let u = rng.next_f64();
            let r = cdf.partition_point(|&c| c <= u).min(vocab - 1);
            counts[r] += 1;
            if i > 0 {
                line.push(b' ');
            }
            line.extend_from_slice(&words[r]);
        }
        line.push(b'\n');
        w.write_all(&line)?;
        bytes += line.len() as u64;
        lines += 1;
        nwords += n as u64;
    }
    w.flush()?;
    let distinct = counts.iter().filter(|&&c| c > 0).count();
    let mut idx: Vec<usize> = (0..vocab).collect();
    idx.sort_by(|&a, &b| counts[b].cmp(&counts[a]).then(words[a].cmp(&words[b])));
    let mut e = BufWriter::new(File::create(expected_path(out))?);
    writeln!(e, "bytes {bytes}")?;
    writeln!(e, "lines {lines}")?;
    writeln!(e, "words {nwords}")?;
    writeln!(e, "distinct {distinct}")?;
    for &i in idx.iter().take(10) {
        writeln!(e, "top {} {}", String::from_utf8_lossy(&words[i]), counts[i])?;
    }
    e.flush()?;
    Ok(WordsSummary { bytes, lines, words: nwords, distinct })
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Record `i`: a 10-byte random key, then fixed markers, the row id in hex
/// and filler derived from it (the gensort layout).
fn make_record(rng: &mut SplitMix64, i: u64, rec: &mut [u8; 100]) {
    let a = rng.next_u64().to_be_bytes();
    let b = rng.next_u64().to_be_bytes();
    rec[0..8].copy_from_slice(&a);
    rec[8..10].copy_from_slice(&b[0..2]);
    rec[10] = 0x00;
    rec[11] = 0x11;
    let row = i as u128;
    for k in 0..32 {
        let nib = ((row >> (4 * (31 - k))) & 0xF) as usize;
        rec[12 + k] = HEX[nib];
    }
    rec[44..48].copy_from_slice(&[0x88, 0x99, 0xAA, 0xBB]);
    for g in 0..12u64 {
        let d = HEX[(i.wrapping_add(g) % 16) as usize];
        let at = 48 + (g as usize) * 4;
        rec[at..at + 4].fill(d);
    }
    rec[96..100].copy_from_slice(&[0xCC, 0xDD, 0xEE, 0xFF]);
}

/// What [`gen_records`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordsSummary {
    pub records: u64,
    pub checksum: u64,
}

/// Writes `n` 100-byte records to `out` and the oracle to `out.expected`.
pub fn gen_records(out: &Path, n: u64, seed: u64) -> std::io::Result<RecordsSummary> {
    let mut rng = SplitMix64::new(seed);
    let mut w = BufWriter::with_capacity(1 << 20, File::create(out)?);
    let mut rec = [0u8; 100];
    let mut checksum: u64 = 0;
    for i in 0..n {
        make_record(&mut rng, i, &mut rec);
        checksum = checksum.wrapping_add(fnv1a64(&rec));
        w.write_all(&rec)?;
    }
    w.flush()?;
    let mut e = BufWriter::new(File::create(expected_path(out))?);
    writeln!(e, "records {n}")?;
    writeln!(e, "bytes {}", n * 100)?;
    writeln!(e, "checksum_fnv1a64_sum {checksum}")?;
    e.flush()?;
    Ok(RecordsSummary { records: n, checksum })
}

/// Parses an `.expected` file into (key, value) lines, in order.
pub fn read_expected(path: &Path) -> std::io::Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .lines()
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(' ').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix64_and_key_of_match_workloads_md() {
        assert_eq!(mix64(0), 16294208416658607535);
        assert_eq!(key_of(12345, 1_000_000), 707472);
    }

    #[test]
    fn fnv_update_composes() {
        let data = b"hello, records";
        assert_eq!(fnv1a64(data), fnv1a64_update(fnv1a64(&data[..5]), &data[5..]));
    }
}
