//! The executor's block manager: persisted RDD partitions, by (rdd, partition).
//! Blocks are kept as live values (`Arc<Vec<T>>` behind `Any`), so reading a
//! cached partition costs no deserialization; each keeps its encoder, so the
//! block server can hand it to a task on another executor.

use ember_core::task::CachedBlock;
use parking_lot::Mutex;
use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Default)]
pub struct BlockManager {
    blocks: Mutex<HashMap<(u64, usize), CachedBlock>>,
}

impl BlockManager {
    pub fn get(&self, rdd: u64, partition: usize) -> Option<Arc<dyn Any + Send + Sync>> {
        self.blocks.lock().get(&(rdd, partition)).map(|b| b.values.clone())
    }

    pub fn put(&self, rdd: u64, partition: usize, block: CachedBlock) {
        self.blocks.lock().insert((rdd, partition), block);
    }

    /// A cached partition encoded for another executor; encoding runs
    /// outside the lock.
    pub fn encoded(&self, rdd: u64, partition: usize) -> Result<Vec<u8>, String> {
        let block = self.blocks.lock().get(&(rdd, partition)).cloned();
        let block = block.ok_or_else(|| format!("rdd {rdd} partition {partition} is not cached here"))?;
        (block.encode)(&*block.values)
    }

    /// Drops every cached partition of an RDD (`unpersist`).
    pub fn remove_rdd(&self, rdd: u64) -> usize {
        let mut blocks = self.blocks.lock();
        let before = blocks.len();
        blocks.retain(|(r, _), _| *r != rdd);
        before - blocks.len()
    }

    pub fn len(&self) -> usize {
        self.blocks.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode_u8s(values: &(dyn Any + Send + Sync)) -> Result<Vec<u8>, String> {
        values.downcast_ref::<Vec<u8>>().cloned().ok_or_else(|| "not bytes".to_string())
    }

    #[test]
    fn cached_blocks_are_served_encoded_until_unpersisted() {
        let blocks = BlockManager::default();
        blocks.put(3, 1, CachedBlock { values: Arc::new(vec![7u8, 8]), encode: encode_u8s });
        assert_eq!(blocks.encoded(3, 1), Ok(vec![7, 8]));
        assert!(blocks.encoded(3, 0).unwrap_err().contains("rdd 3 partition 0 is not cached here"));
        assert_eq!(blocks.remove_rdd(3), 1);
        assert!(blocks.encoded(3, 1).is_err());
    }
}
