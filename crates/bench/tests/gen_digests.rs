//! The generator port must write byte-identical files to the reference
//! `gen_data.rs`. The digests below are SHA-256 of the reference's output
//! (`rustc --edition 2021 -O gen_data.rs`, then `gen_data words w1.txt 200000`,
//! `gen_data records r1.bin 5000`, `gen_data words w2.txt 65536 500 1.3 9`,
//! `gen_data records r2.bin 777 123`, and `sha256sum`), recorded once so the
//! test needs no reference binary or source at test time.

use ember_bench::gen::{gen_records, gen_words};
use sha2::{Digest, Sha256};
use std::path::Path;

fn sha256_hex(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn check(path: &Path, expected_data: &str, expected_oracle: &str) {
    assert_eq!(sha256_hex(path), expected_data, "{}", path.display());
    let oracle = path.with_file_name(format!("{}.expected", path.file_name().unwrap().to_string_lossy()));
    assert_eq!(sha256_hex(&oracle), expected_oracle, "{}", oracle.display());
}

#[test]
fn words_default_distribution_matches_reference() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("w1.txt");
    let s = gen_words(&p, 200_000, 100_000, 1.0, 42).unwrap();
    assert_eq!((s.bytes, s.lines, s.words, s.distinct), (200_055, 2878, 28768, 9928));
    check(
        &p,
        "c886d86405601a4b57fe6e136b259701bd313d791816c13d11cfd2b23faed78a",
        "f12ed8c620050d5dde5dc7b62f6ed46274fbbd35e5ca13a6c00d27b19655a514",
    );
}

#[test]
fn words_other_parameters_match_reference() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("w2.txt");
    gen_words(&p, 65_536, 500, 1.3, 9).unwrap();
    check(
        &p,
        "2555c6f8eb7e96abf54d7bc23d84001dd57992ca81c46e8a5b347fd4e59a2775",
        "d8dff9b5df4213018d7430eaadec5882faa479f9df7627d2c8db135e4667c7cc",
    );
}

#[test]
fn records_default_seed_match_reference() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("r1.bin");
    let s = gen_records(&p, 5_000, 7).unwrap();
    assert_eq!(s.checksum, 15116777819010913061);
    check(
        &p,
        "23075854cbda912d2c18eed8636666dba54d54c379a988d3d855614ab3d94710",
        "ada10285d38f550a4f3cafd6f64d7cc8706da42faffaf710ca399b6ba63babbc",
    );
}

#[test]
fn records_other_parameters_match_reference() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("r2.bin");
    let s = gen_records(&p, 777, 123).unwrap();
    assert_eq!(s.checksum, 13830779999562315417);
    check(
        &p,
        "90ee7fd1ab764299f5e410cdae46e66b3e01a6f0f619e4aebe10db5c8698342b",
        "d8373839f92273ce2a3e2851058abe528675ce26eb8ecb5f1df071457b1f5337",
    );
}
