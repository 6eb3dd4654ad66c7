//! Typed errors of the admin client: transport failures, protocol surprises, and the
//! Kafka error codes brokers answer with, under Kafka's own names.

use std::fmt;
use std::time::Duration;

use kafka_protocol::ResponseError;

/// An error code a broker answered with, and its message when the broker sent one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaError {
    pub error: ResponseError,
    pub message: Option<String>,
}

impl KafkaError {
    /// `None` for code 0 (no error).
    pub fn from_code(code: i16, message: Option<&str>) -> Option<Self> {
        ResponseError::try_from_code(code).map(|error| KafkaError {
            error,
            message: message.filter(|m| !m.is_empty()).map(str::to_string),
        })
    }

    pub fn code(&self) -> i16 {
        self.error.code()
    }

    /// Kafka's name for the code, as `Errors.java` spells it: `NOT_CONTROLLER`.
    pub fn name(&self) -> String {
        kafka_error_name(self.error)
    }

    /// Worth another attempt: what the protocol marks retriable, except a missing
    /// topic, which no admin call here waits for.
    pub fn is_retriable(&self) -> bool {
        self.error.is_retriable() && self.error != ResponseError::UnknownTopicOrPartition
    }
}

impl fmt::Display for KafkaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.code())?;
        if let Some(m) = &self.message {
            write!(f, ": {m}")?;
        }
        Ok(())
    }
}

/// `UnknownTopicOrPartition` -> `UNKNOWN_TOPIC_OR_PARTITION`.
pub fn kafka_error_name(error: ResponseError) -> String {
    if let ResponseError::Unknown(code) = error {
        return format!("UNKNOWN_ERROR_CODE_{code}");
    }
    let camel = error.to_string();
    let mut name = String::with_capacity(camel.len() + 8);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{addr}: {source}")]
    Io {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{addr}: no answer to {api} within {after:?}")]
    Timeout {
        addr: String,
        api: &'static str,
        after: Duration,
    },
    #[error("{addr}: {detail}")]
    Protocol { addr: String, detail: String },
    #[error("{addr} serves {api} v{broker_min}..=v{broker_max}, this client v{client_min}..=v{client_max}")]
    UnsupportedVersion {
        addr: String,
        api: &'static str,
        broker_min: i16,
        broker_max: i16,
        client_min: i16,
        client_max: i16,
    },
    #[error("no broker reachable (tried {tried:?}): {last}")]
    NoBrokerReachable { tried: Vec<String>, last: String },
    #[error("{api} {resource}: {error}")]
    Kafka {
        api: &'static str,
        resource: String,
        error: KafkaError,
    },
}

impl AdminError {
    /// The broker's error code, when the failure is one.
    pub fn kafka(&self) -> Option<&KafkaError> {
        match self {
            AdminError::Kafka { error, .. } => Some(error),
            _ => None,
        }
    }

    /// Whether the broker answered with this code.
    pub fn is(&self, code: ResponseError) -> bool {
        self.kafka().is_some_and(|e| e.error == code)
    }

    /// The connection that produced this error cannot be trusted any more (a reply may
    /// still be in flight, or the stream is broken): it must be dropped.
    pub(super) fn breaks_connection(&self) -> bool {
        matches!(
            self,
            AdminError::Io { .. } | AdminError::Timeout { .. } | AdminError::Protocol { .. }
        )
    }

    /// Worth another attempt after a pause (and a metadata refresh).
    pub fn is_retriable(&self) -> bool {
        match self {
            AdminError::Io { .. } | AdminError::Timeout { .. } => true,
            AdminError::NoBrokerReachable { .. } => true,
            AdminError::Kafka { error, .. } => error.is_retriable(),
            AdminError::Protocol { .. } | AdminError::UnsupportedVersion { .. } => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_names_match_errors_java() {
        assert_eq!(
            kafka_error_name(ResponseError::UnknownTopicOrPartition),
            "UNKNOWN_TOPIC_OR_PARTITION"
        );
        assert_eq!(
            kafka_error_name(ResponseError::NotController),
            "NOT_CONTROLLER"
        );
        assert_eq!(
            kafka_error_name(ResponseError::InvalidTopicException),
            "INVALID_TOPIC_EXCEPTION"
        );
        assert_eq!(
            kafka_error_name(ResponseError::Unknown(9999)),
            "UNKNOWN_ERROR_CODE_9999"
        );
    }

    #[test]
    fn error_shows_name_code_and_message() {
        let e = KafkaError::from_code(37, Some("cannot shrink")).unwrap();
        assert_eq!(e.to_string(), "INVALID_PARTITIONS (37): cannot shrink");
        assert_eq!(KafkaError::from_code(0, Some("x")), None);
        assert_eq!(
            KafkaError::from_code(41, Some("")).unwrap().to_string(),
            "NOT_CONTROLLER (41)"
        );
    }

    #[test]
    fn retriable_codes_exclude_a_missing_topic() {
        assert!(KafkaError::from_code(41, None).unwrap().is_retriable());
        assert!(KafkaError::from_code(7, None).unwrap().is_retriable());
        assert!(!KafkaError::from_code(3, None).unwrap().is_retriable());
        assert!(!KafkaError::from_code(36, None).unwrap().is_retriable());
    }
}
