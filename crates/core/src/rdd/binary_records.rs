//! `binary_records`: a file of fixed-length records (Spark's
//! `SparkContext.binaryRecords`), split like `text_file` but with every
//! split boundary rounded down to a whole record, so no record is cut.

use super::text_file::{list_input_files, DEFAULT_BLOCK_SIZE};
use super::{any_rdd, boxed, BoxIter, Dependency, Rdd, RddBase};
use crate::codec::{encode_node, AnyNode, Encode, EncodedNode};
use crate::task::TaskContext;
use ember_common::{Error, RddId, Result, TaskFailure};
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub struct BinaryRecordsRdd {
    id: RddId,
    files: Vec<PathBuf>,
    record_len: usize,
    /// (file index, first byte, byte length): whole records only.
    splits: Vec<(u32, u64, u64)>,
}

impl BinaryRecordsRdd {
    pub fn new(id: RddId, path: &Path, record_len: usize, min_partitions: usize) -> Result<Self> {
        if record_len == 0 {
            return Err(Error::InvalidArgument("record length must be positive".into()));
        }
        let files = list_input_files(path)?;
        let rl = record_len as u64;
        let total: u64 = files.iter().map(|f| f.1).sum();
        let goal = total / min_partitions.max(1) as u64;
        let split = (goal.min(DEFAULT_BLOCK_SIZE) / rl * rl).max(rl);
        let mut splits = Vec::new();
        for (i, (p, len)) in files.iter().enumerate() {
            if len % rl != 0 {
                return Err(Error::InvalidArgument(format!(
                    "{} is {len} bytes, not a whole number of {record_len}-byte records",
                    p.display()
                )));
            }
            let mut start = 0;
            while start < *len {
                let n = split.min(len - start);
                splits.push((i as u32, start, n));
                start += n;
            }
        }
        Ok(BinaryRecordsRdd { id, files: files.into_iter().map(|f| f.0).collect(), record_len, splits })
    }
}

impl Encode for BinaryRecordsRdd {
    type Payload = (RddId, Vec<PathBuf>, usize, Vec<(u32, u64, u64)>);
    fn payload(&self) -> Self::Payload {
        (self.id, self.files.clone(), self.record_len, self.splits.clone())
    }
    fn decode((id, files, record_len, splits): Self::Payload, _: &[AnyNode]) -> Result<Self> {
        Ok(BinaryRecordsRdd { id, files, record_len, splits })
    }
    fn into_any(self) -> AnyNode {
        any_rdd::<Vec<u8>>(Arc::new(self))
    }
}

impl RddBase for BinaryRecordsRdd {
    fn id(&self) -> RddId {
        self.id
    }
    fn name(&self) -> &str {
        "binaryRecords"
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

impl Rdd<Vec<u8>> for BinaryRecordsRdd {
    fn compute(&self, partition: usize, ctx: &TaskContext) -> Result<BoxIter<Vec<u8>>> {
        let (file, start, len) = self.splits[partition];
        let path = self.files[file as usize].clone();
        let mut f = std::fs::File::open(&path).map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
        f.seek(SeekFrom::Start(start)).map_err(|e| Error::io(format!("cannot seek in {}", path.display()), e))?;
        let mut reader = BufReader::with_capacity(1 << 20, f);
        let rl = self.record_len;
        let count = len / rl as u64;
        let ctx2 = ctx.clone();
        Ok(boxed(ctx.interruptible(0..count).map_while(move |_| {
            let mut rec = vec![0u8; rl];
            match reader.read_exact(&mut rec) {
                Ok(()) => Some(rec),
                Err(e) => {
                    ctx2.fail(TaskFailure::Error { message: format!("reading {}: {e}", path.display()) });
                    None
                }
            }
        })))
    }
}
