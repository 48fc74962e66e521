//! The result sink: the last node of a result stage. It applies the job's
//! function (`collect`, `count`, `fold`, ...) to one partition's iterator and
//! serializes what it returns for the driver.

use crate::codec::{encode_node, parent, AnyNode, EncodableNode, Encode, EncodedNode, Func, NodeKey, ShippableFn};
use crate::rdd::{BoxIter, Rdd, RddBase, RddNode};
use crate::task::{StageSink, TaskContext, TaskOutput};
use ember_common::{Error, Result};
use serde::{de::DeserializeOwned, Serialize};
use std::marker::PhantomData;
use std::sync::Arc;

/// Runs `f(state, ctx, partition iterator)` and ships the result.
pub struct ResultSink<T, R, S, F> {
    rdd: Arc<dyn Rdd<T>>,
    state: S,
    f: Func<F>,
    _r: PhantomData<fn() -> R>,
}

impl<T, R, S, F> ResultSink<T, R, S, F>
where
    T: 'static,
    R: Serialize + 'static,
    S: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    F: Fn(&S, &TaskContext, BoxIter<T>) -> Result<R> + ShippableFn,
{
    pub fn new(rdd: Arc<dyn Rdd<T>>, state: S, f: F) -> Self {
        ResultSink { rdd, state, f: Func::new(f), _r: PhantomData }
    }
}

impl<T, R, S, F> StageSink for ResultSink<T, R, S, F>
where
    T: 'static,
    R: Serialize + 'static,
    S: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    F: Fn(&S, &TaskContext, BoxIter<T>) -> Result<R> + ShippableFn,
{
    fn run(&self, ctx: &TaskContext) -> Result<TaskOutput> {
        let iter = self.rdd.compute(ctx.partition_id(), ctx)?;
        let value = (self.f.get())(&self.state, ctx, iter)?;
        let bytes = postcard::to_allocvec(&value).map_err(|e| Error::Codec(format!("serializing task result: {e}")))?;
        Ok(TaskOutput::Result(bytes))
    }
}

impl<T, R, S, F> Encode for ResultSink<T, R, S, F>
where
    T: 'static,
    R: Serialize + 'static,
    S: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    F: Fn(&S, &TaskContext, BoxIter<T>) -> Result<R> + ShippableFn,
{
    type Payload = (S, Func<F>);
    fn payload(&self) -> Self::Payload {
        (self.state.clone(), self.f)
    }
    fn decode((state, f): Self::Payload, parents: &[AnyNode]) -> Result<Self> {
        Ok(ResultSink { rdd: parent(parents, 0)?, state, f, _r: PhantomData })
    }
    fn into_any(self) -> AnyNode {
        Arc::new(Arc::new(self) as Arc<dyn StageSink>)
    }
}

impl<T, R, S, F> EncodableNode for ResultSink<T, R, S, F>
where
    T: 'static,
    R: Serialize + 'static,
    S: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    F: Fn(&S, &TaskContext, BoxIter<T>) -> Result<R> + ShippableFn,
{
    fn node_key(&self) -> NodeKey {
        NodeKey::Sink
    }
    fn encode_self(&self) -> Result<EncodedNode> {
        encode_node(self)
    }
    fn stage_parents(&self) -> Vec<Arc<dyn EncodableNode>> {
        let rdd: Arc<dyn RddBase> = self.rdd.clone();
        vec![Arc::new(RddNode(rdd))]
    }
}
