//! A request as a front-end receives it: the bytes of one stdin line or of
//! one `POST /v1/messages` body, holding one message (`{"text": ..}`) or a
//! batch (`{"messages": [..]}`).
//!
//! Both front-ends read a request through [`parse`] and refuse what it
//! refuses with the same [`RequestError`], and neither reads more than
//! [`MAX_REQUEST_BYTES`] of one request.

use crate::pipeline::InboundMessage;
use crate::shared_cause::SharedCause;
use serde_json::Value;
use std::fmt;

/// The most bytes one request may hold: a stdin line (without its line
/// break) or an HTTP body.
pub const MAX_REQUEST_BYTES: usize = 2 * 1024 * 1024;

/// The most messages one batch may hold.
pub const MAX_BATCH: usize = 1000;

/// What a request asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// One message, answered with one reply.
    One(InboundMessage),
    /// A batch, answered with `{"replies": [..]}`; evaluators score it at once.
    Batch(Vec<InboundMessage>),
}

/// Why a request is refused. Its text says what is wrong, the same on every
/// front-end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    /// The request has nothing but white space.
    Empty,
    /// The request is longer than [`MAX_REQUEST_BYTES`].
    TooLarge,
    /// The request is not UTF-8 text.
    NotUtf8 {
        /// What the decoder says, such as where the first bad byte is.
        cause: std::str::Utf8Error,
    },
    /// The request is not JSON.
    NotJson {
        /// What the JSON parser says.
        cause: SharedCause<serde_json::Error>,
    },
    /// The request is JSON, but not an object.
    NotAnObject {
        /// What it is instead, such as "an array".
        got: &'static str,
    },
    /// The request has both `text` and `messages`.
    BothMessageAndBatch,
    /// `messages` is not an array.
    BatchNotAnArray {
        /// What it is instead.
        got: &'static str,
    },
    /// The batch holds more than [`MAX_BATCH`] messages.
    BatchTooLarge {
        /// How many it holds.
        messages: usize,
    },
    /// One message of the request is not a valid message.
    Message {
        /// Its place in the batch; `None` for a request of one message.
        place: Option<usize>,
        /// What is wrong with it.
        problem: MessageProblem,
    },
}

/// What is wrong with one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageProblem {
    /// A message of a batch is not an object.
    NotAnObject {
        /// What it is instead.
        got: &'static str,
    },
    /// The message has no `text`.
    NoText,
    /// `text` is not a string.
    TextNotAString {
        /// What it is instead.
        got: &'static str,
    },
    /// Another field has the wrong type.
    Invalid {
        /// What the JSON decoder says.
        cause: SharedCause<serde_json::Error>,
    },
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::Empty => f.write_str(
                "the request is empty: send a message such as {\"text\": \"hello\"} \
                 or a batch such as {\"messages\": [{\"text\": \"hello\"}]}",
            ),
            RequestError::TooLarge => write!(
                f,
                "the request is larger than {} MiB ({MAX_REQUEST_BYTES} bytes), \
                 the most one request may hold",
                MAX_REQUEST_BYTES / (1024 * 1024)
            ),
            RequestError::NotUtf8 { cause } => {
                write!(f, "the request is not valid UTF-8: {cause}")
            }
            RequestError::NotJson { cause } => {
                write!(f, "the request is not valid JSON: {cause}")
            }
            RequestError::NotAnObject { got } => write!(
                f,
                "the request must be a JSON object, a message {{\"text\": ..}} or a batch \
                 {{\"messages\": [..]}}, got {got}"
            ),
            RequestError::BothMessageAndBatch => f.write_str(
                "the request has both 'text' and 'messages': send one message or a batch, \
                 not both",
            ),
            RequestError::BatchNotAnArray { got } => {
                write!(f, "'messages' must be an array of messages, got {got}")
            }
            RequestError::BatchTooLarge { messages } => write!(
                f,
                "a batch holds at most {MAX_BATCH} messages, this one has {messages}"
            ),
            RequestError::Message {
                place: Some(index),
                problem,
            } => write!(f, "messages[{index}]: {problem}"),
            RequestError::Message {
                place: None,
                problem,
            } => write!(f, "{problem}"),
        }
    }
}

impl fmt::Display for MessageProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MessageProblem::NotAnObject { got } => write!(
                f,
                "a message must be a JSON object such as {{\"text\": \"hello\"}}, got {got}"
            ),
            MessageProblem::NoText => f.write_str("the message has no 'text' field"),
            MessageProblem::TextNotAString { got } => {
                write!(f, "'text' must be a string, got {got}")
            }
            MessageProblem::Invalid { cause } => write!(f, "invalid message: {cause}"),
        }
    }
}

impl std::error::Error for RequestError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RequestError::NotUtf8 { cause } => Some(cause),
            RequestError::NotJson { cause } => Some(cause),
            RequestError::Message { problem, .. } => Some(problem),
            _ => None,
        }
    }
}

impl std::error::Error for MessageProblem {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            MessageProblem::Invalid { cause } => Some(cause),
            _ => None,
        }
    }
}

/// Reads one request: UTF-8 text of at most [`MAX_REQUEST_BYTES`], one JSON
/// object, either a message or a batch of messages, each with a `text`.
pub fn parse(bytes: &[u8]) -> Result<Request, RequestError> {
    if bytes.len() > MAX_REQUEST_BYTES {
        return Err(RequestError::TooLarge);
    }
    let text = std::str::from_utf8(bytes).map_err(|cause| RequestError::NotUtf8 { cause })?;
    if text.trim().is_empty() {
        return Err(RequestError::Empty);
    }
    let value: Value =
        serde_json::from_str(text).map_err(|e| RequestError::NotJson { cause: e.into() })?;
    let Value::Object(mut fields) = value else {
        return Err(RequestError::NotAnObject {
            got: kind_of(&value),
        });
    };
    let Some(messages) = fields.remove("messages") else {
        return parse_message(Value::Object(fields), None).map(Request::One);
    };
    if fields.contains_key("text") {
        return Err(RequestError::BothMessageAndBatch);
    }
    let Value::Array(messages) = messages else {
        return Err(RequestError::BatchNotAnArray {
            got: kind_of(&messages),
        });
    };
    if messages.len() > MAX_BATCH {
        return Err(RequestError::BatchTooLarge {
            messages: messages.len(),
        });
    }
    messages
        .into_iter()
        .enumerate()
        .map(|(index, value)| parse_message(value, Some(index)))
        .collect::<Result<Vec<_>, _>>()
        .map(Request::Batch)
}

/// Turns one JSON value into a message; `place` is its index in a batch.
fn parse_message(value: Value, place: Option<usize>) -> Result<InboundMessage, RequestError> {
    let refuse = |problem| RequestError::Message { place, problem };
    let Value::Object(fields) = value else {
        return Err(refuse(MessageProblem::NotAnObject {
            got: kind_of(&value),
        }));
    };
    match fields.get("text") {
        Some(Value::String(_)) => {}
        Some(other) => {
            return Err(refuse(MessageProblem::TextNotAString {
                got: kind_of(other),
            }))
        }
        None => return Err(refuse(MessageProblem::NoText)),
    }
    serde_json::from_value(Value::Object(fields))
        .map_err(|e| refuse(MessageProblem::Invalid { cause: e.into() }))
}

/// A JSON value's kind, for error messages.
fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(request: &[u8]) -> RequestError {
        parse(request).expect_err("an error")
    }

    #[test]
    fn one_message_and_a_batch_are_told_apart() {
        match parse(br#"{"text": "hi", "sender": "a"}"#) {
            Ok(Request::One(m)) => assert_eq!((m.text.as_str(), m.sender.as_str()), ("hi", "a")),
            other => panic!("{other:?}"),
        }
        match parse(br#"{"messages": [{"text": "a"}, {"text": "b"}]}"#) {
            Ok(Request::Batch(m)) => assert_eq!(m.len(), 2),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_requests_say_what_is_wrong() {
        assert_eq!(error_of(b"  "), RequestError::Empty);
        assert!(matches!(error_of(b"{nope"), RequestError::NotJson { .. }));
        assert_eq!(
            error_of(b"{\"text\": \"\xff\"}").to_string(),
            "the request is not valid UTF-8: invalid utf-8 sequence of 1 bytes from index 10"
        );
        assert_eq!(
            error_of(br#"{"sender": "a"}"#).to_string(),
            "the message has no 'text' field"
        );
        assert_eq!(
            error_of(br#"{"text": 5}"#).to_string(),
            "'text' must be a string, got a number"
        );
        assert!(error_of(br#"{"text": "a", "permissions": "all"}"#)
            .to_string()
            .starts_with("invalid message: "));
        assert_eq!(
            error_of(br#"{"messages": [{"text": "a"}, {}]}"#).to_string(),
            "messages[1]: the message has no 'text' field"
        );
        assert_eq!(
            error_of(br#"{"messages": [{"text": "a"}, 7]}"#).to_string(),
            "messages[1]: a message must be a JSON object such as {\"text\": \"hello\"}, \
             got a number"
        );
        assert_eq!(
            error_of(br#"{"messages": {}}"#),
            RequestError::BatchNotAnArray { got: "an object" }
        );
        assert_eq!(
            error_of(br#"{"messages": [], "text": "a"}"#),
            RequestError::BothMessageAndBatch
        );
        assert_eq!(
            error_of(b"[1]"),
            RequestError::NotAnObject { got: "an array" }
        );
        assert_eq!(
            error_of(b"\"hi\""),
            RequestError::NotAnObject { got: "a string" }
        );
    }

    #[test]
    fn the_size_and_batch_limits_hold() {
        let mut large = b"{\"text\": \"".to_vec();
        large.resize(MAX_REQUEST_BYTES, b'a');
        large.extend_from_slice(b"\"}");
        assert_eq!(error_of(&large), RequestError::TooLarge);
        let batch = serde_json::json!({
            "messages": vec![serde_json::json!({"text": "a"}); MAX_BATCH + 1]
        });
        assert_eq!(
            error_of(batch.to_string().as_bytes()),
            RequestError::BatchTooLarge {
                messages: MAX_BATCH + 1
            }
        );
    }
}
