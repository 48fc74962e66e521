//! The executor's block manager: persisted RDD partitions, by (rdd, partition).
//! Blocks are kept as live values (`Arc<Vec<T>>` behind `Any`), so reading a
//! cached partition costs no deserialization.

use parking_lot::Mutex;
use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

type Block = Arc<dyn Any + Send + Sync>;

#[derive(Default)]
pub struct BlockManager {
    blocks: Mutex<HashMap<(u64, usize), Block>>,
}

impl BlockManager {
    pub fn get(&self, rdd: u64, partition: usize) -> Option<Block> {
        self.blocks.lock().get(&(rdd, partition)).cloned()
    }

    pub fn put(&self, rdd: u64, partition: usize, block: Block) {
        self.blocks.lock().insert((rdd, partition), block);
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
