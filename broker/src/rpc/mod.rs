//! tonic services between Rill nodes; the messages are in `proto/rill.proto`.

#[allow(clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("rill.v1");
}
