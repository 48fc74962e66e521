//! The task codec: how a stage crosses from the driver to an executor.
//!
//! A stage is a slice of lineage ending at a *sink* (a result function or a
//! shuffle writer). It is encoded as a **flat list of nodes** in dependency
//! order — parents before children — and decoded by a single loop, never by
//! recursion, so a 10,000-deep chain of `map`s cannot overflow the stack.
//!
//! Each node carries:
//! - the offset of its monomorphized decoder from a fixed anchor (see
//!   [`anchor`], the only module with `unsafe`),
//! - a fingerprint of its Rust type name, re-checked by the decoder itself,
//! - its serde payload (postcard), and
//! - the indices of its parents within the list (always smaller than its own).
//!
//! The blob carries the BLAKE3 hash of the executable that produced it; a
//! process whose own hash differs refuses to decode it, because offsets are
//! only meaningful inside the byte-identical image.
//!
//! Wire layout of a [`StageBlob`] (postcard):
//! `version: u32, exe_hash: [u8; 32], nodes: Vec<NodeRecord>` where
//! `NodeRecord = (decoder_offset: i64, type_fingerprint: u64, payload: bytes, parents: Vec<u32>)`.
//! The last node is the stage's sink.

pub mod anchor;
mod func;

pub use anchor::{assert_zero_sized, conjure};
pub use func::{Func, ShippableFn};

use ember_common::{Error, RddId, Result};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

/// Bumped whenever the blob layout or node payload conventions change.
pub const CODEC_VERSION: u32 = 1;

/// A decoded node: an `Arc<dyn Rdd<T>>` or an `Arc<dyn StageSink>`, behind `Any`.
pub type AnyNode = Arc<dyn Any + Send + Sync>;

/// A monomorphized node decoder: payload and already-decoded parents in, node out.
pub type DecodeFn = fn(&[u8], &[AnyNode]) -> Result<AnyNode>;

/// One node of an encoded stage.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeRecord {
    pub decoder_offset: i64,
    pub type_fingerprint: u64,
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    pub parents: Vec<u32>,
}

/// An encoded stage. See the module docs for the layout.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct StageBlob {
    pub version: u32,
    pub exe_hash: [u8; 32],
    pub nodes: Vec<NodeRecord>,
}

/// A lineage node type that can be shipped: it names its payload and how to
/// rebuild itself from the payload and its decoded parents.
pub trait Encode: Sized + Send + Sync + 'static {
    type Payload: Serialize + DeserializeOwned;
    /// The payload to ship (everything but the parents).
    fn payload(&self) -> Self::Payload;
    /// Rebuilds the node on the executor.
    fn decode(payload: Self::Payload, parents: &[AnyNode]) -> Result<Self>;
    /// Wraps the node in the form its consumers downcast to.
    fn into_any(self) -> AnyNode;
}

/// The first 8 bytes of the BLAKE3 hash of `N`'s type name. Type names of
/// closures run to hundreds of bytes, and every node is fingerprinted when
/// it is encoded and again when it is decoded, so each thread keeps the
/// fingerprints it has computed.
fn fingerprint_of<N: 'static>() -> u64 {
    thread_local! {
        static FINGERPRINTS: std::cell::RefCell<foldhash::HashMap<std::any::TypeId, u64>> =
            std::cell::RefCell::new(foldhash::HashMap::default());
    }
    let id = std::any::TypeId::of::<N>();
    FINGERPRINTS.with(|f| {
        *f.borrow_mut().entry(id).or_insert_with(|| {
            let h = blake3::hash(std::any::type_name::<N>().as_bytes());
            u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"))
        })
    })
}

/// The decoder that [`encode_node`] points the executor at.
fn decode_node<N: Encode>(bytes: &[u8], parents: &[AnyNode]) -> Result<AnyNode> {
    let (fingerprint, payload): (u64, N::Payload) = postcard::from_bytes(bytes)
        .map_err(|e| Error::Codec(format!("decoding {}: {e}", std::any::type_name::<N>())))?;
    if fingerprint != fingerprint_of::<N>() {
        return Err(Error::Codec(format!("node type mismatch while decoding {}", std::any::type_name::<N>())));
    }
    Ok(N::decode(payload, parents)?.into_any())
}

/// What a node contributes to a blob, minus the parent indices.
pub struct EncodedNode {
    pub decoder_offset: i64,
    pub type_fingerprint: u64,
    pub payload: Vec<u8>,
}

/// Encodes one node (its parents are encoded separately by the stage walker).
pub fn encode_node<N: Encode>(node: &N) -> Result<EncodedNode> {
    let fingerprint = fingerprint_of::<N>();
    let payload = postcard::to_allocvec(&(fingerprint, node.payload()))
        .map_err(|e| Error::Codec(format!("encoding {}: {e}", std::any::type_name::<N>())))?;
    Ok(EncodedNode { decoder_offset: anchor::offset_of(decode_node::<N>), type_fingerprint: fingerprint, payload })
}

/// Downcasts a decoded parent to the type a node expects.
pub fn parent<T: Clone + 'static>(parents: &[AnyNode], i: usize) -> Result<T> {
    parents
        .get(i)
        .and_then(|p| p.downcast_ref::<T>())
        .cloned()
        .ok_or_else(|| Error::Codec(format!("parent {i} missing or not a {}", std::any::type_name::<T>())))
}

/// A node in the driver's lineage graph, as the stage encoder sees it.
pub trait EncodableNode: Send + Sync {
    /// Identity within one stage, so a node reached twice is encoded once.
    fn node_key(&self) -> NodeKey;
    /// The node's own payload and decoder.
    fn encode_self(&self) -> Result<EncodedNode>;
    /// The parents that belong to the same stage, in the order the decoder expects.
    fn stage_parents(&self) -> Vec<Arc<dyn EncodableNode>>;
}

/// Distinguishes RDD nodes from sink nodes in the encoder's memo table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NodeKey {
    Rdd(RddId),
    Sink,
}

/// Encodes the stage ending at `sink` as a flat, parents-first node list.
/// The walk is an explicit-stack DFS, so lineage depth costs heap, not stack.
pub fn encode_stage(sink: Arc<dyn EncodableNode>) -> Result<StageBlob> {
    let mut index_of: HashMap<NodeKey, u32> = HashMap::new();
    let mut nodes: Vec<NodeRecord> = Vec::new();
    // (node, parents expanded?)
    let mut stack: Vec<(Arc<dyn EncodableNode>, bool)> = vec![(sink, false)];
    while let Some((node, expanded)) = stack.pop() {
        let key = node.node_key();
        if index_of.contains_key(&key) {
            continue;
        }
        let parents = node.stage_parents();
        if !expanded {
            stack.push((node, true));
            for p in parents.into_iter().rev() {
                if !index_of.contains_key(&p.node_key()) {
                    stack.push((p, false));
                }
            }
            continue;
        }
        let parent_idx = parents
            .iter()
            .map(|p| {
                index_of
                    .get(&p.node_key())
                    .copied()
                    .ok_or_else(|| Error::Codec("lineage cycle or parent encoded out of order".into()))
            })
            .collect::<Result<Vec<u32>>>()?;
        let enc = node.encode_self()?;
        index_of.insert(key, nodes.len() as u32);
        nodes.push(NodeRecord {
            decoder_offset: enc.decoder_offset,
            type_fingerprint: enc.type_fingerprint,
            payload: enc.payload,
            parents: parent_idx,
        });
    }
    Ok(StageBlob { version: CODEC_VERSION, exe_hash: *exe_hash(), nodes })
}

impl StageBlob {
    /// The stage's code without its data: which node types, wired how.
    /// Stages built by the same code share a shape whatever data they
    /// carry, so the task scheduler keeps the durations of past tasks per
    /// shape. Stable within one process only.
    pub fn shape(&self) -> u64 {
        use std::hash::{BuildHasher, Hash, Hasher};
        let mut h = foldhash::fast::FixedState::default().build_hasher();
        for n in &self.nodes {
            (n.decoder_offset, n.type_fingerprint, &n.parents).hash(&mut h);
        }
        h.finish()
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        postcard::to_allocvec(self).map_err(|e| Error::Codec(format!("encoding stage: {e}")))
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        postcard::from_bytes(bytes).map_err(|e| Error::Codec(format!("malformed stage blob: {e}")))
    }
}

/// Decodes a stage and returns its sink node (still behind `Any`).
///
/// Refuses blobs from another executable, another codec version, or with
/// forward parent references — before any decoder address is used.
pub fn decode_stage(blob: &StageBlob) -> Result<AnyNode> {
    if blob.version != CODEC_VERSION {
        return Err(Error::Codec(format!(
            "stage encoded with codec version {}, this executable speaks {}",
            blob.version, CODEC_VERSION
        )));
    }
    if &blob.exe_hash != exe_hash() {
        return Err(Error::Codec(format!(
            "stage was encoded by a different executable (hash {}, ours {}); \
             driver and executors must run the byte-identical binary",
            hex(&blob.exe_hash),
            hex(exe_hash())
        )));
    }
    if blob.nodes.is_empty() {
        return Err(Error::Codec("empty stage blob".into()));
    }
    let mut decoded: Vec<AnyNode> = Vec::with_capacity(blob.nodes.len());
    let mut parents: Vec<AnyNode> = Vec::new();
    for (i, node) in blob.nodes.iter().enumerate() {
        parents.clear();
        for &p in &node.parents {
            let p = p as usize;
            if p >= i {
                return Err(Error::Codec(format!("node {i} refers forward to node {p}")));
            }
            parents.push(decoded[p].clone());
        }
        // SAFETY: the executable hash was verified above, so the offset was
        // produced by `offset_of` in an identical image.
        let decode = unsafe { anchor::decoder_at(node.decoder_offset) };
        decoded.push(decode(&node.payload, &parents)?);
    }
    Ok(decoded.pop().expect("non-empty"))
}

/// BLAKE3 of this process's executable, computed once.
pub fn exe_hash() -> &'static [u8; 32] {
    static HASH: OnceLock<[u8; 32]> = OnceLock::new();
    HASH.get_or_init(|| {
        let path = std::env::current_exe().expect("cannot locate the running executable");
        let mut hasher = blake3::Hasher::new();
        std::fs::File::open(&path)
            .and_then(|mut f| std::io::copy(&mut f, &mut hasher))
            .unwrap_or_else(|e| panic!("cannot read the running executable {path:?}: {e}"));
        *hasher.finalize().as_bytes()
    })
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two node types with the same payload shape, told apart only by their
    /// fingerprints.
    struct Left(u32);
    struct Right(u32);

    impl Encode for Left {
        type Payload = u32;
        fn payload(&self) -> u32 {
            self.0
        }
        fn decode(payload: u32, _parents: &[AnyNode]) -> Result<Self> {
            Ok(Left(payload))
        }
        fn into_any(self) -> AnyNode {
            Arc::new(self.0)
        }
    }

    impl Encode for Right {
        type Payload = u32;
        fn payload(&self) -> u32 {
            self.0
        }
        fn decode(payload: u32, _parents: &[AnyNode]) -> Result<Self> {
            Ok(Right(payload))
        }
        fn into_any(self) -> AnyNode {
            Arc::new(self.0)
        }
    }

    #[test]
    fn a_node_decodes_only_as_its_own_type_however_often_fingerprinted() {
        assert_ne!(fingerprint_of::<Left>(), fingerprint_of::<Right>());
        // The remembered fingerprint is the computed one, on any thread.
        let here = fingerprint_of::<Left>();
        assert_eq!(fingerprint_of::<Left>(), here);
        assert_eq!(std::thread::spawn(fingerprint_of::<Left>).join().unwrap(), here);
        for _ in 0..3 {
            let encoded = encode_node(&Left(7)).unwrap();
            assert_eq!(encoded.type_fingerprint, here);
            let node = decode_node::<Left>(&encoded.payload, &[]).unwrap();
            assert_eq!(*node.downcast_ref::<u32>().unwrap(), 7);
            let err = decode_node::<Right>(&encoded.payload, &[]).err().unwrap().to_string();
            assert!(err.contains("node type mismatch"), "{err}");
        }
    }

    fn blob(nodes: Vec<(EncodedNode, Vec<u32>)>) -> StageBlob {
        let nodes = nodes
            .into_iter()
            .map(|(n, parents)| NodeRecord {
                decoder_offset: n.decoder_offset,
                type_fingerprint: n.type_fingerprint,
                payload: n.payload,
                parents,
            })
            .collect();
        StageBlob { version: CODEC_VERSION, exe_hash: *exe_hash(), nodes }
    }

    #[test]
    fn a_stage_shape_is_its_node_types_and_wiring_not_its_data() {
        let shape = |a: u32, b: u32, wiring: Vec<u32>| {
            blob(vec![(encode_node(&Left(a)).unwrap(), vec![]), (encode_node(&Left(b)).unwrap(), wiring)]).shape()
        };
        assert_eq!(shape(1, 2, vec![0]), shape(30, 40, vec![0]));
        assert_ne!(shape(1, 2, vec![0]), shape(1, 2, vec![]));
        let other_type =
            blob(vec![(encode_node(&Left(1)).unwrap(), vec![]), (encode_node(&Right(2)).unwrap(), vec![0])]).shape();
        assert_ne!(shape(1, 2, vec![0]), other_type);
    }
}
