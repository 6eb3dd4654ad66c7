//! A scripted apiserver for tests: a `kube::Client` whose every request is recorded and
//! answered by a closure, so the I/O layer's conversation (order, verbs, field manager,
//! bodies) is asserted without a server.

use std::sync::{Arc, Mutex};

use http::{Request, Response};
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};

/// One request as the apiserver would have seen it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// Path and query, e.g. `/api/v1/namespaces/ns/configmaps/x-config?fieldManager=...`.
    pub uri: String,
    pub content_type: String,
    pub body: Value,
}

impl Recorded {
    /// `METHOD path` without the query, for compact assertions.
    pub fn line(&self) -> String {
        format!(
            "{} {}",
            self.method,
            self.uri.split('?').next().unwrap_or_default()
        )
    }
}

pub type Log = Arc<Mutex<Vec<Recorded>>>;

/// A client answering each request with `respond(&request) -> (status, body)`.
pub fn client<F>(respond: F) -> (Client, Log)
where
    F: Fn(&Recorded) -> (u16, Value) + Send + Sync + 'static,
{
    let log: Log = Arc::default();
    let respond = Arc::new(respond);
    let seen = log.clone();
    let service = tower::service_fn(move |req: Request<Body>| {
        let (respond, seen) = (respond.clone(), seen.clone());
        async move {
            let (parts, body) = req.into_parts();
            let bytes = body.collect_bytes().await.unwrap_or_default();
            let recorded = Recorded {
                method: parts.method.to_string(),
                uri: parts.uri.to_string(),
                content_type: parts
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string(),
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            };
            let (status, body) = respond(&recorded);
            seen.lock().unwrap().push(recorded);
            Ok::<_, std::convert::Infallible>(
                Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&body).unwrap()))
                    .unwrap(),
            )
        }
    });
    (Client::new(service, "default"), log)
}

/// The apiserver's 404 body.
pub fn not_found() -> (u16, Value) {
    (
        404,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
               "reason": "NotFound", "code": 404, "message": "not found"}),
    )
}

/// The apiserver's 409 body.
pub fn conflict() -> (u16, Value) {
    (
        409,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
               "reason": "Conflict", "code": 409, "message": "the object has been modified"}),
    )
}
