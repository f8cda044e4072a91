//! The agent on a pipe: one JSON request per stdin line, one JSON line on
//! stdout for each, in order.
//!
//! A request is read as every front-end reads one ([`crate::request`]): a
//! message gets its reply, a batch `{"replies": [..]}`, and a line that is
//! no request (not UTF-8, not JSON, no `text`, longer than
//! [`MAX_REQUEST_BYTES`]) gets `{"error": "..."}` saying why, while the
//! lines after it are served. Blank lines are skipped. A line is never held
//! in memory past the limit: the rest of a line too long is skipped as it
//! arrives. In cluster mode a message whose reply does not come in time
//! gets `{"error": "...", "id": "..."}` naming its id.

use crate::request::{self, Request, RequestError, MAX_REQUEST_BYTES};
use crate::PluginHost;
use futures_util::StreamExt;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio_util::bytes::{Bytes, BytesMut};
use tokio_util::codec::{AnyDelimiterCodec, AnyDelimiterCodecError, Decoder, FramedRead};

/// Answers every request line on stdin until it closes.
pub(super) async fn answer_lines(host: Arc<PluginHost>) -> Result<(), Box<dyn std::error::Error>> {
    let mut lines = FramedRead::new(tokio::io::stdin(), RequestLines::new());
    let mut stdout = tokio::io::stdout();
    while let Some(line) = lines.next().await {
        let line = line?;
        if matches!(&line, RequestLine::Complete(bytes) if bytes.trim_ascii().is_empty()) {
            continue;
        }
        let answer = if host.is_shutting_down() {
            serde_json::json!({ "error": crate::SHUTTING_DOWN }).to_string()
        } else {
            match line {
                RequestLine::TooLong => error_answer(&RequestError::TooLarge),
                RequestLine::Complete(bytes) => match request::parse(&bytes) {
                    Ok(Request::One(message)) => {
                        match host.answer_unless_shutting_down(message).await {
                            Ok(answered) => serde_json::to_string(&answered.into_reply())?,
                            Err(error) => serde_json::json!({
                                "error": error.to_string(),
                                "id": error.id(),
                            })
                            .to_string(),
                        }
                    }
                    Ok(Request::Batch(messages)) => {
                        let replies = host
                            .answer_batch_unless_shutting_down(messages)
                            .await
                            .into_reply();
                        serde_json::json!({ "replies": replies }).to_string()
                    }
                    Err(error) => error_answer(&error),
                },
            }
        };
        stdout.write_all(format!("{answer}\n").as_bytes()).await?;
        stdout.flush().await?;
    }
    Ok(())
}

/// `{"error": "..."}`.
fn error_answer(error: &RequestError) -> String {
    serde_json::json!({ "error": error.to_string() }).to_string()
}

/// One line of stdin.
#[derive(Debug, PartialEq, Eq)]
enum RequestLine {
    /// A whole line, without its line break.
    Complete(Bytes),
    /// A line longer than [`MAX_REQUEST_BYTES`]; the rest of it is skipped.
    TooLong,
}

/// Splits stdin into lines of at most [`MAX_REQUEST_BYTES`]. A line too long
/// is one [`RequestLine::TooLong`], not an error, so the lines after it are
/// still read.
struct RequestLines(AnyDelimiterCodec);

impl RequestLines {
    fn new() -> Self {
        Self(AnyDelimiterCodec::new_with_max_length(
            b"\n".to_vec(),
            b"\n".to_vec(),
            MAX_REQUEST_BYTES,
        ))
    }

    /// The codec's answer, with a line too long as a line of its own.
    fn line(
        found: Result<Option<Bytes>, AnyDelimiterCodecError>,
    ) -> std::io::Result<Option<RequestLine>> {
        match found {
            Ok(line) => Ok(line.map(RequestLine::Complete)),
            Err(AnyDelimiterCodecError::MaxChunkLengthExceeded) => Ok(Some(RequestLine::TooLong)),
            Err(AnyDelimiterCodecError::Io(error)) => Err(error),
        }
    }
}

impl Decoder for RequestLines {
    type Item = RequestLine;
    type Error = std::io::Error;

    fn decode(&mut self, buffer: &mut BytesMut) -> std::io::Result<Option<RequestLine>> {
        Self::line(self.0.decode(buffer))
    }

    fn decode_eof(&mut self, buffer: &mut BytesMut) -> std::io::Result<Option<RequestLine>> {
        Self::line(self.0.decode_eof(buffer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every line `RequestLines` finds in `input` fed in chunks of `chunk`
    /// bytes, then the end of input.
    fn lines_of(input: &[u8], chunk: usize) -> Vec<RequestLine> {
        let mut codec = RequestLines::new();
        let mut buffer = BytesMut::new();
        let mut lines = Vec::new();
        for piece in input.chunks(chunk) {
            buffer.extend_from_slice(piece);
            while let Some(line) = codec.decode(&mut buffer).expect("decode") {
                lines.push(line);
            }
            assert!(
                buffer.len() <= MAX_REQUEST_BYTES + chunk,
                "a line is never held past the limit"
            );
        }
        while let Some(line) = codec.decode_eof(&mut buffer).expect("decode") {
            lines.push(line);
        }
        lines
    }

    #[test]
    fn a_line_too_long_is_one_line_and_the_next_lines_are_read() {
        let mut input = b"first\n".to_vec();
        input.resize(input.len() + 3 * MAX_REQUEST_BYTES, b'a');
        input.extend_from_slice(b"\nlast");
        let complete =
            |text: &'static str| RequestLine::Complete(Bytes::from_static(text.as_bytes()));
        assert_eq!(
            lines_of(&input, 64 * 1024),
            [complete("first"), RequestLine::TooLong, complete("last")]
        );
        let mut at_the_limit = vec![b'a'; MAX_REQUEST_BYTES];
        at_the_limit.push(b'\n');
        assert_eq!(
            lines_of(&at_the_limit, 8 * 1024),
            [RequestLine::Complete(Bytes::from(vec![
                b'a';
                MAX_REQUEST_BYTES
            ]))]
        );
    }
}
