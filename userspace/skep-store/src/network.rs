//! Raft between replicas over tonic gRPC (`proto/raft.proto`).
//!
//! openraft messages travel as postcard payloads inside `RaftMessage`; the
//! client side is [`NetworkFactory`]/[`Connection`], the server side
//! [`RaftService`]. Two skep RPCs ride along: `ClientWrite` forwards a write
//! from a follower to the leader, `ReadIndex` gives a follower the log index
//! a linearizable read must wait for.

use std::time::Duration;

use openraft::error::{NetworkError, RemoteError, Unreachable};
use openraft::network::RPCOption;
use openraft::{RaftNetwork, RaftNetworkFactory};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::transport::{Channel, Endpoint};

use crate::batch::Batcher;
use crate::error::StoreError;
use crate::typ::{
    AppendEntriesRequest, AppendEntriesResponse, ClientWriteError, InstallSnapshotError,
    InstallSnapshotRequest, InstallSnapshotResponse, Node, NodeId, Raft, RaftError, RpcError,
    VoteRequest, VoteResponse,
};
use crate::types::{Request, Response};

/// Generated gRPC code for `proto/raft.proto`.
#[allow(
    unused_qualifications,
    clippy::pedantic,
    clippy::allow_attributes_without_reason,
    reason = "generated code"
)]
pub(crate) mod pb {
    tonic::include_proto!("skep.raft.v1");
}

/// The largest gRPC message accepted (`AppendEntries` batches, snapshot chunks).
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A gRPC client of one replica's Raft service.
pub(crate) type Client = pb::raft_client::RaftClient<Channel>;

/// Opens a lazily connecting client to a replica's Raft gRPC address.
pub(crate) fn client(addr: &str) -> Result<Client, tonic::transport::Error> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .connect_lazy();
    Ok(Client::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

/// Creates one [`Connection`] per replica openraft replicates to.
#[derive(Debug, Clone, Default)]
pub struct NetworkFactory;

impl RaftNetworkFactory<crate::typ::TypeConfig> for NetworkFactory {
    type Network = Connection;

    #[tracing::instrument(level = "debug", skip_all, fields(target, addr = %node.addr))]
    async fn new_client(&mut self, target: NodeId, node: &Node) -> Connection {
        let client = client(&node.addr).map_err(|err| {
            tracing::warn!(?err, target, addr = %node.addr, "failed to build a raft gRPC client");
            err.to_string()
        });
        Connection { target, client }
    }
}

/// The gRPC client of one target replica.
pub struct Connection {
    target: NodeId,
    client: Result<Client, String>,
}

#[derive(Clone, Copy)]
enum Rpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct TransportError(String);

impl Connection {
    async fn call<Req, Resp, E>(
        &mut self,
        rpc: Rpc,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RpcError<E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let client = match &mut self.client {
            Ok(client) => client,
            Err(err) => {
                return Err(RpcError::Unreachable(Unreachable::new(&TransportError(
                    err.clone(),
                ))));
            }
        };
        let payload =
            postcard::to_stdvec(request).map_err(|e| RpcError::Network(NetworkError::new(&e)))?;
        let mut message = tonic::Request::new(pb::RaftMessage { payload });
        message.set_timeout(option.hard_ttl());
        let reply = match rpc {
            Rpc::AppendEntries => client.append_entries(message).await,
            Rpc::Vote => client.vote(message).await,
            Rpc::InstallSnapshot => client.install_snapshot(message).await,
        };
        let reply = reply.map_err(|status| match status.code() {
            tonic::Code::Unavailable | tonic::Code::Unknown => {
                RpcError::Unreachable(Unreachable::new(&status))
            }
            _ => RpcError::Network(NetworkError::new(&status)),
        })?;
        let result: Result<Resp, RaftError<E>> = postcard::from_bytes(&reply.into_inner().payload)
            .map_err(|e| RpcError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RpcError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<crate::typ::TypeConfig> for Connection {
    #[tracing::instrument(level = "trace", skip_all, fields(target = self.target))]
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse, RpcError> {
        self.call(Rpc::AppendEntries, &rpc, &option).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(target = self.target))]
    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse, RpcError<InstallSnapshotError>> {
        self.call(Rpc::InstallSnapshot, &rpc, &option).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(target = self.target))]
    async fn vote(
        &mut self,
        rpc: VoteRequest,
        option: RPCOption,
    ) -> Result<VoteResponse, RpcError> {
        self.call(Rpc::Vote, &rpc, &option).await
    }
}

/// Serves a replica's Raft RPCs.
pub(crate) struct RaftService {
    raft: Raft,
    batcher: Batcher,
}

impl RaftService {
    pub(crate) fn server(raft: Raft, batcher: Batcher) -> pb::raft_server::RaftServer<RaftService> {
        pb::raft_server::RaftServer::new(RaftService { raft, batcher })
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }
}

fn decode<T: DeserializeOwned>(
    request: tonic::Request<pb::RaftMessage>,
) -> Result<T, tonic::Status> {
    postcard::from_bytes(&request.into_inner().payload).map_err(|err| {
        tonic::Status::invalid_argument(format!("failed to decode the raft message: {err}"))
    })
}

fn encode<T: Serialize>(reply: &T) -> Result<tonic::Response<pb::RaftMessage>, tonic::Status> {
    let payload = postcard::to_stdvec(reply).map_err(|err| {
        tonic::Status::internal(format!("failed to encode the raft reply: {err}"))
    })?;
    Ok(tonic::Response::new(pb::RaftMessage { payload }))
}

#[tonic::async_trait]
impl pb::raft_server::Raft for RaftService {
    async fn append_entries(
        &self,
        request: tonic::Request<pb::RaftMessage>,
    ) -> Result<tonic::Response<pb::RaftMessage>, tonic::Status> {
        let rpc: AppendEntriesRequest = decode(request)?;
        encode(&self.raft.append_entries(rpc).await)
    }

    async fn vote(
        &self,
        request: tonic::Request<pb::RaftMessage>,
    ) -> Result<tonic::Response<pb::RaftMessage>, tonic::Status> {
        let rpc: VoteRequest = decode(request)?;
        encode(&self.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: tonic::Request<pb::RaftMessage>,
    ) -> Result<tonic::Response<pb::RaftMessage>, tonic::Status> {
        let rpc: InstallSnapshotRequest = decode(request)?;
        encode(&self.raft.install_snapshot(rpc).await)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn client_write(
        &self,
        request: tonic::Request<pb::RaftMessage>,
    ) -> Result<tonic::Response<pb::RaftMessage>, tonic::Status> {
        let write: Request = decode(request)?;
        let result: Result<Response, RaftError<ClientWriteError>> = match write {
            Request::Compact { .. } | Request::Batch(_) => {
                self.raft.client_write(write).await.map(|reply| reply.data)
            }
            _ => self
                .batcher
                .submit(write)
                .await
                .ok_or_else(|| tonic::Status::unavailable("the store is shutting down"))?,
        };
        encode(&result)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn read_index(
        &self,
        _request: tonic::Request<pb::ReadIndexRequest>,
    ) -> Result<tonic::Response<pb::ReadIndexReply>, tonic::Status> {
        let reply = match self.raft.get_read_log_id().await {
            Ok((read_log_id, _applied)) => pb::ReadIndexReply {
                index: read_log_id.map_or(0, |log_id| log_id.index),
                leader_id: 0,
                error: String::new(),
            },
            Err(err) => pb::ReadIndexReply {
                index: 0,
                leader_id: match &err {
                    openraft::error::RaftError::APIError(
                        openraft::error::CheckIsLeaderError::ForwardToLeader(forward),
                    ) => forward.leader_id.unwrap_or(0),
                    _ => 0,
                },
                error: err.to_string(),
            },
        };
        Ok(tonic::Response::new(reply))
    }
}

/// Forwards a write to the leader.
#[tracing::instrument(level = "debug", skip_all, fields(leader_id, op = write.op_name()))]
pub(crate) async fn forward_write(
    mut client: Client,
    leader_id: NodeId,
    write: &Request,
) -> Result<Result<Response, RaftError<ClientWriteError>>, StoreError> {
    let forward_err = |message: String| StoreError::Forward {
        op: write.op_name(),
        leader_id,
        message,
    };
    let payload = postcard::to_stdvec(write).map_err(|e| forward_err(e.to_string()))?;
    let reply = client
        .client_write(pb::RaftMessage { payload })
        .await
        .map_err(|status| forward_err(status.to_string()))?;
    postcard::from_bytes(&reply.into_inner().payload).map_err(|e| forward_err(e.to_string()))
}

/// Asks the leader for the index a linearizable read must wait for.
#[tracing::instrument(level = "debug", skip_all, fields(leader_id))]
pub(crate) async fn read_index(mut client: Client, leader_id: NodeId) -> Result<u64, StoreError> {
    let forward_err = |message: String| StoreError::Forward {
        op: "read index",
        leader_id,
        message,
    };
    let reply = client
        .read_index(pb::ReadIndexRequest {})
        .await
        .map_err(|status| forward_err(status.to_string()))?
        .into_inner();
    if reply.error.is_empty() {
        Ok(reply.index)
    } else {
        Err(StoreError::NotLeader {
            leader_id: (reply.leader_id != 0).then_some(reply.leader_id),
        })
    }
}
