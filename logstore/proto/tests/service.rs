//! The generated LogStore client and server talk over the method paths upstream uses
//! (`/woodpecker.proto.logstore.LogStore/<Rpc>`), including server-streamed appends.

use std::net::SocketAddr;

use prost::bytes::Bytes;
use tonic::codegen::{BoxStream, http};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Response, Status as GrpcStatus};
use woodpecker_proto::logstore::log_store_client::LogStoreClient;
use woodpecker_proto::logstore::log_store_server::{LogStore, LogStoreServer};
use woodpecker_proto::logstore::*;
use woodpecker_proto::meta::{SegmentMetadata, SegmentState};

/// Answers every RPC from its request alone, so the test can check what crossed the wire.
struct EchoStore;

fn ok() -> Option<Status> {
    Some(Status::default())
}

#[tonic::async_trait]
impl LogStore for EchoStore {
    type AddEntryStream = BoxStream<AddEntryResponse>;
    type AddEntriesStream = BoxStream<AddEntriesResponse>;

    async fn add_entry(&self, request: Request<AddEntryRequest>) -> Result<Response<Self::AddEntryStream>, GrpcStatus> {
        let entry = request.into_inner().entry.ok_or_else(|| GrpcStatus::invalid_argument("no entry"))?;
        let frames = [AddEntryState::Buffered, AddEntryState::Synced]
            .map(|state| Ok(AddEntryResponse { status: ok(), entry_id: entry.entry_id, state: state as i32 }));
        Ok(Response::new(Box::pin(tonic::codegen::tokio_stream::iter(frames))))
    }

    async fn add_entries(
        &self,
        request: Request<AddEntriesRequest>,
    ) -> Result<Response<Self::AddEntriesStream>, GrpcStatus> {
        let ids: Vec<i64> = request.into_inner().entries.iter().map(|e| e.entry_id).collect();
        let frame = AddEntriesResponse { status: ok(), entry_id: ids, state: AddEntryState::Synced as i32 };
        Ok(Response::new(Box::pin(tonic::codegen::tokio_stream::iter([Ok(frame)]))))
    }

    async fn get_batch_entries_adv(
        &self,
        request: Request<GetBatchEntriesAdvRequest>,
    ) -> Result<Response<GetBatchEntriesAdvResponse>, GrpcStatus> {
        let req = request.into_inner();
        let entries = (req.from_entry_id..req.from_entry_id + req.max_entries)
            .map(|id| LogEntry { seg_id: req.segment_id, entry_id: id, values: Bytes::from(id.to_string()) })
            .collect();
        Ok(Response::new(GetBatchEntriesAdvResponse {
            status: ok(),
            result: Some(BatchReadResult { entries, last_read_state: req.last_read_state }),
        }))
    }

    async fn fence_segment(
        &self,
        request: Request<FenceSegmentRequest>,
    ) -> Result<Response<FenceSegmentResponse>, GrpcStatus> {
        Ok(Response::new(FenceSegmentResponse { status: ok(), last_entry_id: request.into_inner().segment_id * 10 }))
    }

    async fn complete_segment(
        &self,
        request: Request<CompleteSegmentRequest>,
    ) -> Result<Response<CompleteSegmentResponse>, GrpcStatus> {
        Ok(Response::new(CompleteSegmentResponse {
            status: ok(),
            last_entry_id: request.into_inner().last_add_confirmed,
        }))
    }

    async fn compact_segment(
        &self,
        request: Request<CompactSegmentRequest>,
    ) -> Result<Response<CompactSegmentResponse>, GrpcStatus> {
        Ok(Response::new(CompactSegmentResponse {
            status: ok(),
            metadata: Some(SegmentMetadata {
                seg_no: request.into_inner().segment_id,
                state: SegmentState::Sealed as i32,
                ..SegmentMetadata::default()
            }),
        }))
    }

    async fn notify_segment_compacted(
        &self,
        _request: Request<NotifySegmentCompactedRequest>,
    ) -> Result<Response<NotifySegmentCompactedResponse>, GrpcStatus> {
        Ok(Response::new(NotifySegmentCompactedResponse { status: ok() }))
    }

    async fn get_segment_last_add_confirmed(
        &self,
        request: Request<GetSegmentLastAddConfirmedRequest>,
    ) -> Result<Response<GetSegmentLastAddConfirmedResponse>, GrpcStatus> {
        Ok(Response::new(GetSegmentLastAddConfirmedResponse {
            status: ok(),
            last_entry_id: request.into_inner().log_id + 1,
        }))
    }

    async fn get_segment_block_count(
        &self,
        _request: Request<GetSegmentBlockCountRequest>,
    ) -> Result<Response<GetSegmentBlockCountResponse>, GrpcStatus> {
        Ok(Response::new(GetSegmentBlockCountResponse { status: ok(), block_count: 0 }))
    }

    async fn update_last_add_confirmed(
        &self,
        _request: Request<UpdateLastAddConfirmedRequest>,
    ) -> Result<Response<UpdateLastAddConfirmedResponse>, GrpcStatus> {
        Ok(Response::new(UpdateLastAddConfirmedResponse { status: ok() }))
    }

    async fn clean_segment(
        &self,
        _request: Request<CleanSegmentRequest>,
    ) -> Result<Response<CleanSegmentResponse>, GrpcStatus> {
        Ok(Response::new(CleanSegmentResponse { status: ok() }))
    }

    async fn mark_log_deleted(
        &self,
        _request: Request<MarkLogDeletedRequest>,
    ) -> Result<Response<MarkLogDeletedResponse>, GrpcStatus> {
        Ok(Response::new(MarkLogDeletedResponse { status: ok() }))
    }

    async fn mark_instance_deleted(
        &self,
        _request: Request<MarkInstanceDeletedRequest>,
    ) -> Result<Response<MarkInstanceDeletedResponse>, GrpcStatus> {
        Ok(Response::new(MarkInstanceDeletedResponse { status: ok() }))
    }

    async fn select_nodes(
        &self,
        request: Request<SelectNodesRequest>,
    ) -> Result<Response<SelectNodesResponse>, GrpcStatus> {
        let filters = request.into_inner().filters;
        Ok(Response::new(SelectNodesResponse {
            status: ok(),
            nodes: Vec::new(),
            total_count: i32::try_from(filters.len()).unwrap_or(i32::MAX),
        }))
    }
}

async fn start() -> (SocketAddr, Channel) {
    let incoming = TcpIncoming::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let addr = incoming.local_addr().expect("local addr");
    tokio::spawn(Server::builder().add_service(LogStoreServer::new(EchoStore)).serve_with_incoming(incoming));
    let channel = Endpoint::from_shared(format!("http://{addr}")).expect("endpoint").connect().await.expect("connect");
    (addr, channel)
}

#[tokio::test]
async fn generated_client_reaches_generated_server_including_streams() {
    let (_, channel) = start().await;
    let mut client = LogStoreClient::new(channel);

    let fenced = client
        .fence_segment(FenceSegmentRequest { log_id: 1, segment_id: 4, ..Default::default() })
        .await
        .expect("fence")
        .into_inner();
    assert_eq!(fenced.last_entry_id, 40);

    let mut stream = client
        .add_entry(AddEntryRequest {
            log_id: 1,
            entry: Some(LogEntry { seg_id: 4, entry_id: 7, values: Bytes::from_static(b"payload") }),
            ..Default::default()
        })
        .await
        .expect("add_entry")
        .into_inner();
    let mut states = Vec::new();
    while let Some(frame) = stream.message().await.expect("frame") {
        assert_eq!(frame.entry_id, 7);
        states.push(frame.state());
    }
    assert_eq!(states, [AddEntryState::Buffered, AddEntryState::Synced]);

    let batch = client
        .get_batch_entries_adv(GetBatchEntriesAdvRequest {
            segment_id: 4,
            from_entry_id: 2,
            max_entries: 3,
            ..Default::default()
        })
        .await
        .expect("read")
        .into_inner();
    let entries = batch.result.expect("result").entries;
    assert_eq!(entries.iter().map(|e| e.entry_id).collect::<Vec<_>>(), [2, 3, 4]);
    assert_eq!(entries[0].values, Bytes::from_static(b"2"));

    let compacted = client
        .compact_segment(CompactSegmentRequest { segment_id: 4, ..Default::default() })
        .await
        .expect("compact")
        .into_inner();
    assert_eq!(compacted.metadata.expect("metadata").state(), SegmentState::Sealed);
}

#[tokio::test]
async fn server_answers_on_upstream_method_path() {
    let (_, channel) = start().await;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let path = http::uri::PathAndQuery::from_static("/woodpecker.proto.logstore.LogStore/GetSegmentLastAddConfirmed");
    let codec =
        tonic_prost::ProstCodec::<GetSegmentLastAddConfirmedRequest, GetSegmentLastAddConfirmedResponse>::default();
    let response = grpc
        .unary(Request::new(GetSegmentLastAddConfirmedRequest { log_id: 41, ..Default::default() }), path, codec)
        .await
        .expect("upstream path is served")
        .into_inner();
    assert_eq!(response.last_entry_id, 42);
    assert_eq!(response.status.expect("status").code, 0);
}
