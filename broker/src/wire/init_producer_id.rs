//! InitProducerId: a producer id for an idempotent producer. The rules (fresh id and
//! epoch 0 every time, transactions refused) are explained in `crate::producer_state`.

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::ResponseError;

use super::Context;

pub async fn handle(ctx: &Context, request: InitProducerIdRequest) -> InitProducerIdResponse {
    let failed = |e: ResponseError| {
        InitProducerIdResponse::default()
            .with_error_code(e.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    match request.transactional_id.as_ref().map(|t| t.0.as_str()) {
        // Kafka refuses the empty id the same way.
        Some("") => return failed(ResponseError::InvalidRequest),
        Some(id) => {
            tracing::info!(transactional_id = id, "InitProducerId for a transactional producer refused: transactions are not supported");
            return failed(ResponseError::UnsupportedVersion);
        }
        None => {}
    }
    // May wait for the quorum to hand out the next block of ids: awaited.
    match ctx.producer_ids.generate().await {
        Ok(id) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Err(e) => {
            tracing::error!(error = %e, "cannot allocate a producer id");
            // Retriable for clients: they try again rather than fail the producer.
            failed(ResponseError::CoordinatorNotAvailable)
        }
    }
}
