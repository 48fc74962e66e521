//! `text_file`: lines of a file (or of every file in a directory) split
//! into byte ranges the way Hadoop's `TextInputFormat` does, so Spark users
//! get the same lines in the same order:
//!
//! - split size = `max(1, min(total / min_partitions, block_size))`, with a
//!   last split up to 1.1x that size (Hadoop's `SPLIT_SLOP`);
//! - a split that does not start at byte 0 skips through the first `\n`;
//! - a split reads every line that *starts* at or before its end offset.
//!
//! Together these give every line to exactly one split, never cut. As in
//! Hadoop's `LineReader`, a line ends at `\n`, `\r\n` or a lone `\r`; a last
//! line without a terminator is kept; an empty file has no lines.

use super::{any_rdd, boxed, BoxIter, Dependency, Rdd, RddBase};
use crate::codec::{encode_node, AnyNode, Encode, EncodedNode};
use crate::task::TaskContext;
use ember_common::{Error, RddId, Result, TaskFailure};
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Hadoop's local file system block size, the default split cap (32 MiB).
pub const DEFAULT_BLOCK_SIZE: u64 = 32 << 20;
const SPLIT_SLOP: f64 = 1.1;

/// One byte range of one input file.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileSplit {
    pub file: u32,
    pub start: u64,
    pub end: u64,
}

/// Lists input files: `path` itself, or the visible files of a directory, sorted.
pub fn list_input_files(path: &Path) -> Result<Vec<(PathBuf, u64)>> {
    let meta =
        std::fs::metadata(path).map_err(|e| Error::io(format!("input path does not exist: {}", path.display()), e))?;
    let mut files = Vec::new();
    if meta.is_dir() {
        let entries = std::fs::read_dir(path).map_err(|e| Error::io(format!("cannot list {}", path.display()), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(format!("cannot list {}", path.display()), e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || name.starts_with('_') {
                continue;
            }
            let m = entry.metadata().map_err(|e| Error::io(format!("cannot stat {}", entry.path().display()), e))?;
            if m.is_file() {
                files.push((entry.path(), m.len()));
            }
        }
        files.sort();
    } else {
        files.push((path.to_path_buf(), meta.len()));
    }
    Ok(files)
}

/// Hadoop's split computation over a set of files.
pub fn compute_splits(files: &[(PathBuf, u64)], min_partitions: usize, block_size: u64) -> Vec<FileSplit> {
    let total: u64 = files.iter().map(|f| f.1).sum();
    let goal = total / min_partitions.max(1) as u64;
    let split_size = goal.min(block_size).max(1);
    let mut splits = Vec::new();
    for (i, (_, len)) in files.iter().enumerate() {
        let mut remaining = *len;
        let mut start = 0;
        while remaining as f64 / split_size as f64 > SPLIT_SLOP {
            splits.push(FileSplit { file: i as u32, start, end: start + split_size });
            start += split_size;
            remaining -= split_size;
        }
        if remaining > 0 {
            splits.push(FileSplit { file: i as u32, start, end: start + remaining });
        }
    }
    splits
}

pub struct TextFileRdd {
    id: RddId,
    files: Vec<PathBuf>,
    splits: Vec<FileSplit>,
}

impl TextFileRdd {
    pub fn new(id: RddId, path: &Path, min_partitions: usize) -> Result<Self> {
        let listed = list_input_files(path)?;
        let splits = compute_splits(&listed, min_partitions, DEFAULT_BLOCK_SIZE);
        Ok(TextFileRdd { id, files: listed.into_iter().map(|f| f.0).collect(), splits })
    }
}

impl Encode for TextFileRdd {
    type Payload = (RddId, Vec<PathBuf>, Vec<FileSplit>);
    fn payload(&self) -> Self::Payload {
        (self.id, self.files.clone(), self.splits.clone())
    }
    fn decode((id, files, splits): Self::Payload, _: &[AnyNode]) -> Result<Self> {
        Ok(TextFileRdd { id, files, splits })
    }
    fn into_any(self) -> AnyNode {
        any_rdd::<String>(Arc::new(self))
    }
}

impl RddBase for TextFileRdd {
    fn id(&self) -> RddId {
        self.id
    }
    fn name(&self) -> &str {
        "textFile"
    }
    fn num_partitions(&self) -> usize {
        self.splits.len()
    }
    fn dependencies(&self) -> Vec<Dependency> {
        Vec::new()
    }
    fn encode_self(&self) -> Result<EncodedNode> {
        encode_node(self)
    }
}

impl Rdd<String> for TextFileRdd {
    fn compute(&self, partition: usize, ctx: &TaskContext) -> Result<BoxIter<String>> {
        let split = &self.splits[partition];
        let path = &self.files[split.file as usize];
        let lines = SplitLines::open(path, split.start, split.end)?;
        let ctx2 = ctx.clone();
        Ok(boxed(ctx.interruptible(lines).map_while(move |r| match r {
            Ok(line) => Some(line),
            Err(e) => {
                ctx2.fail(TaskFailure::Error { message: e.to_string() });
                None
            }
        })))
    }
}

/// The lines of one split, as owned strings (invalid UTF-8 is replaced, as
/// Hadoop's `Text.toString` does).
pub struct SplitLines {
    reader: BufReader<File>,
    path: PathBuf,
    pos: u64,
    end: u64,
    buf: Vec<u8>,
    done: bool,
}

impl SplitLines {
    pub fn open(path: &Path, start: u64, end: u64) -> Result<Self> {
        let mut file = File::open(path).map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
        file.seek(SeekFrom::Start(start)).map_err(|e| Error::io(format!("cannot seek in {}", path.display()), e))?;
        let mut lines = SplitLines {
            reader: BufReader::with_capacity(1 << 20, file),
            path: path.to_path_buf(),
            pos: start,
            end,
            buf: Vec::with_capacity(256),
            done: false,
        };
        if start != 0 {
            // The line that straddles (or starts at) our start belongs to the previous split.
            let n = lines.read_raw_line()?;
            lines.pos += n as u64;
        }
        Ok(lines)
    }

    /// Reads one line into `buf` (without its terminator); returns the bytes consumed.
    fn read_raw_line(&mut self) -> Result<usize> {
        self.buf.clear();
        let mut consumed = 0usize;
        loop {
            let avail =
                self.reader.fill_buf().map_err(|e| Error::io(format!("cannot read {}", self.path.display()), e))?;
            if avail.is_empty() {
                return Ok(consumed);
            }
            match memchr::memchr2(b'\n', b'\r', avail) {
                None => {
                    let n = avail.len();
                    self.buf.extend_from_slice(avail);
                    self.reader.consume(n);
                    consumed += n;
                }
                Some(i) => {
                    let was_cr = avail[i] == b'\r';
                    self.buf.extend_from_slice(&avail[..i]);
                    self.reader.consume(i + 1);
                    consumed += i + 1;
                    if was_cr {
                        let next = self
                            .reader
                            .fill_buf()
                            .map_err(|e| Error::io(format!("cannot read {}", self.path.display()), e))?;
                        if next.first() == Some(&b'\n') {
                            self.reader.consume(1);
                            consumed += 1;
                        }
                    }
                    return Ok(consumed);
                }
            }
        }
    }
}

impl Iterator for SplitLines {
    type Item = Result<String>;
    fn next(&mut self) -> Option<Result<String>> {
        if self.done || self.pos > self.end {
            return None;
        }
        match self.read_raw_line() {
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
            Ok(0) => {
                self.done = true;
                None
            }
            Ok(n) => {
                self.pos += n as u64;
                let line: &[u8] = &self.buf;
                Some(Ok(match std::str::from_utf8(line) {
                    Ok(s) => s.to_owned(),
                    Err(_) => String::from_utf8_lossy(line).into_owned(),
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Write;

    fn lines_via_splits(content: &[u8], min_partitions: usize, block: u64) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.txt");
        std::fs::File::create(&path).unwrap().write_all(content).unwrap();
        let files = list_input_files(&path).unwrap();
        let splits = compute_splits(&files, min_partitions, block);
        let mut out = Vec::new();
        for s in splits {
            for l in SplitLines::open(&path, s.start, s.end).unwrap() {
                out.push(l.unwrap());
            }
        }
        out
    }

    fn reference_lines(content: &[u8]) -> Vec<String> {
        if content.is_empty() {
            return Vec::new();
        }
        // Hadoop's terminators: \n, \r\n, lone \r.
        let mut v = Vec::new();
        let mut cur = Vec::new();
        let mut i = 0;
        while i < content.len() {
            match content[i] {
                b'\n' => v.push(std::mem::take(&mut cur)),
                b'\r' => {
                    v.push(std::mem::take(&mut cur));
                    if content.get(i + 1) == Some(&b'\n') {
                        i += 1;
                    }
                }
                c => cur.push(c),
            }
            i += 1;
        }
        if !cur.is_empty() {
            v.push(cur);
        }
        v.into_iter().map(|l| String::from_utf8_lossy(&l).into_owned()).collect()
    }

    #[test]
    fn edge_cases() {
        assert!(lines_via_splits(b"", 3, 4).is_empty());
        assert_eq!(lines_via_splits(b"a\r\nb\r\n", 2, 1), vec!["a", "b"]);
        assert_eq!(lines_via_splits(b"no newline", 4, 2), vec!["no newline"]);
        assert_eq!(lines_via_splits(b"\n\n", 2, 1), vec!["", ""]);
        assert_eq!(lines_via_splits(b"a\rb\r\nc", 3, 1), vec!["a", "b", "c"]);
    }

    #[test]
    fn split_sizes_follow_hadoop() {
        let files = vec![(PathBuf::from("x"), 1000u64)];
        let s = compute_splits(&files, 4, DEFAULT_BLOCK_SIZE);
        assert_eq!(s.len(), 4);
        assert!(s.iter().all(|s| s.end - s.start == 250));
        // 1 GiB in 32 MiB blocks: 32 splits.
        let s = compute_splits(&[(PathBuf::from("x"), 1 << 30)], 2, DEFAULT_BLOCK_SIZE);
        assert_eq!(s.len(), 32);
        // slop: 105 bytes at split size 100 is one split.
        let s = compute_splits(&[(PathBuf::from("x"), 105)], 1, 100);
        assert_eq!(s.len(), 1);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn every_line_exactly_once(
            lines in proptest::collection::vec("[a-c\r]{0,6}", 0..30),
            trailing in any::<bool>(),
            parts in 1usize..9,
            block in 1u64..20,
        ) {
            let mut content = lines.join("\n").into_bytes();
            if trailing && !content.is_empty() { content.push(b'\n'); }
            prop_assert_eq!(lines_via_splits(&content, parts, block), reference_lines(&content));
        }
    }
}
