//! Rill operator: reconciles `Cluster` and `Topic` resources (group `rill.dev`).

pub mod cluster;
pub mod controller;
pub mod crd;
pub mod kafka_admin;
pub mod leader;
pub mod metrics;
#[cfg(test)]
pub(crate) mod mock_api;
pub mod topic;

/// Errors of a reconcile; each has a short label for the errors metric.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("object has no {0}")]
    MissingField(&'static str),
    #[error("kafka: {0}")]
    Kafka(#[from] kafka_admin::AdminError),
    #[error("finalizer: {0}")]
    Finalizer(Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    /// Value of the `reason` label of `rill_operator_reconcile_errors_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(e)) if e.code == 409 => "conflict",
            Error::Kube(kube::Error::Api(e)) if e.code == 422 => "invalid",
            Error::Kube(kube::Error::Api(e)) if e.code == 403 => "forbidden",
            Error::Kube(kube::Error::Api(_)) => "api",
            Error::Kube(_) => "client",
            Error::MissingField(_) => "missing_field",
            Error::Kafka(_) => "kafka",
            Error::Finalizer(e) => match e.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.metric_label(),
                _ => "finalizer",
            },
        }
    }
}
