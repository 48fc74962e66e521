//! A request/response client over one authenticated connection. Calls from
//! many threads share the connection: each request carries an id, a reader
//! task routes responses back by id, so slow responses never block others.

use crate::frame::{connect, ConnReader, RpcError, Secret};
use parking_lot::Mutex as SyncMutex;
use serde::{de::DeserializeOwned, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

type Pending<Resp> = Arc<SyncMutex<Option<HashMap<u64, oneshot::Sender<Resp>>>>>;

pub struct RpcClient<Req, Resp> {
    next_id: AtomicU64,
    tx: mpsc::UnboundedSender<(u64, Req)>,
    pending: Pending<Resp>,
}

impl<Req, Resp> RpcClient<Req, Resp>
where
    Req: Serialize + Send + Sync + 'static,
    Resp: DeserializeOwned + Send + 'static,
{
    /// Connects and authenticates; must run inside a tokio runtime.
    pub async fn connect(addr: &str, secret: &Secret, protocol: u32, max_frame: usize) -> Result<Self, RpcError> {
        let stream = TcpStream::connect(addr).await?;
        let (reader, writer) = connect(stream, secret, protocol, max_frame).await?;
        let (tx, rx) = mpsc::unbounded_channel::<(u64, Req)>();
        let pending: Pending<Resp> = Arc::new(SyncMutex::new(Some(HashMap::new())));
        tokio::spawn(crate::frame::pump(writer, rx));
        let p2 = pending.clone();
        tokio::spawn(read_responses(reader, p2));
        Ok(RpcClient { next_id: AtomicU64::new(0), tx, pending })
    }

    /// Sends a request and waits for its response.
    pub async fn call(&self, req: Req) -> Result<Resp, RpcError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        match &mut *self.pending.lock() {
            Some(map) => {
                map.insert(id, tx);
            }
            None => return Err(RpcError::Closed),
        }
        self.tx.send((id, req)).map_err(|_| RpcError::Closed)?;
        rx.await.map_err(|_| RpcError::Closed)
    }

    pub fn is_closed(&self) -> bool {
        self.pending.lock().is_none()
    }
}

async fn read_responses<Resp: DeserializeOwned>(mut reader: ConnReader, pending: Pending<Resp>) {
    loop {
        match reader.recv::<(u64, Resp)>().await {
            Ok((id, resp)) => {
                let waiter = pending.lock().as_mut().and_then(|m| m.remove(&id));
                if let Some(w) = waiter {
                    let _ = w.send(resp);
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "rpc client connection ended");
                // Dropping the senders wakes every waiter with `Closed`.
                pending.lock().take();
                return;
            }
        }
    }
}

/// One shared [`RpcClient`] per block-server address, created on first use.
/// Usable from plain threads (task threads) through a runtime handle.
pub struct BlockClients {
    handle: tokio::runtime::Handle,
    secret: Secret,
    max_frame: usize,
    clients: SyncMutex<HashMap<String, Arc<BlockClient>>>,
}

pub type BlockClient = RpcClient<crate::messages::BlockRequest, crate::messages::BlockResponse>;

impl BlockClients {
    pub fn new(handle: tokio::runtime::Handle, secret: Secret, max_frame: usize) -> Self {
        BlockClients { handle, secret, max_frame, clients: SyncMutex::new(HashMap::new()) }
    }

    async fn client(&self, addr: &str) -> Result<Arc<BlockClient>, RpcError> {
        if let Some(c) = self.clients.lock().get(addr).filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let c = Arc::new(RpcClient::connect(addr, &self.secret, crate::PROTOCOL_VERSION, self.max_frame).await?);
        self.clients.lock().insert(addr.to_string(), c.clone());
        Ok(c)
    }

    /// Requests a block (async).
    pub async fn fetch(
        &self,
        addr: &str,
        req: crate::messages::BlockRequest,
    ) -> Result<crate::messages::BlockResponse, RpcError> {
        let client = self.client(addr).await?;
        let r = client.call(req).await;
        if r.is_err() {
            self.clients.lock().remove(addr);
        }
        r
    }

    /// Requests a block from a thread outside the runtime (a task thread):
    /// sends `req` now and returns what waits for its answer, so a caller
    /// can have several requests in flight (to one or many servers).
    pub fn fetch_in_background(
        self: &Arc<Self>,
        addr: &str,
        req: crate::messages::BlockRequest,
    ) -> impl FnOnce() -> Result<crate::messages::BlockResponse, RpcError> + Send + 'static {
        let (this, addr) = (self.clone(), addr.to_string());
        let task = self.handle.spawn(async move { this.fetch(&addr, req).await });
        let handle = self.handle.clone();
        move || handle.block_on(task).unwrap_or(Err(RpcError::Closed))
    }
}
