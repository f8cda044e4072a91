//! Where log lines go: to stderr, or, while the chat runs on a terminal,
//! above its prompt, so that they never break into the line being typed.
//!
//! [`LogOutput`] is the writer of the `tracing` subscriber. Each event is
//! written whole to stderr, unless [`above_prompt`] has handed it the line
//! editor's printer: then every event is queued, and a thread of its own
//! hands the queue to the printer (which may wait for the editor, so no
//! thread that logs ever waits for it).

use rustyline::ExternalPrinter;
use std::io::{self, Write};
use std::sync::mpsc;
use std::sync::{Mutex, PoisonError};
use tracing_subscriber::fmt::MakeWriter;

/// The queue of the printer above the prompt, while there is one.
static ABOVE_PROMPT: Mutex<Option<mpsc::Sender<String>>> = Mutex::new(None);

/// The log writer: stderr, or the queue above the chat's prompt.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct LogOutput;

impl<'a> MakeWriter<'a> for LogOutput {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> LogWriter {
        let queue = ABOVE_PROMPT
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match queue {
            Some(queue) => LogWriter::AbovePrompt {
                queue,
                event: Vec::new(),
            },
            None => LogWriter::Stderr(io::stderr()),
        }
    }
}

/// Where one log event is written.
#[derive(Debug)]
pub(super) enum LogWriter {
    /// Straight to stderr.
    Stderr(io::Stderr),
    /// Collected, then queued for the printer above the prompt.
    AbovePrompt {
        /// The printer's queue.
        queue: mpsc::Sender<String>,
        /// The event so far.
        event: Vec<u8>,
    },
}

impl Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match self {
            LogWriter::Stderr(stderr) => stderr.write(bytes),
            LogWriter::AbovePrompt { event, .. } => {
                event.extend_from_slice(bytes);
                Ok(bytes.len())
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            LogWriter::Stderr(stderr) => stderr.flush(),
            LogWriter::AbovePrompt { .. } => Ok(()),
        }
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        if let LogWriter::AbovePrompt { queue, event } = self {
            if !event.is_empty() {
                // A closed queue means the chat is over; the event is lost
                // only if it raced the chat's end.
                let _ = queue.send(String::from_utf8_lossy(event).into_owned());
            }
        }
    }
}

/// Log lines go above the chat's prompt while this lives, and to stderr
/// again once it is dropped.
#[derive(Debug)]
pub(super) struct LogsAbovePrompt(());

/// Sends every log line to `printer` until the returned guard is dropped.
pub(super) fn above_prompt(
    mut printer: impl ExternalPrinter + Send + 'static,
) -> io::Result<LogsAbovePrompt> {
    let (queue, events) = mpsc::channel::<String>();
    std::thread::Builder::new()
        .name("chat log printer".into())
        .spawn(move || {
            // Ends when the guard is dropped and the queue is empty.
            for event in events {
                if printer.print(event.clone()).is_err() {
                    let _ = io::stderr().write_all(event.as_bytes());
                }
            }
        })?;
    *ABOVE_PROMPT.lock().unwrap_or_else(PoisonError::into_inner) = Some(queue);
    Ok(LogsAbovePrompt(()))
}

impl Drop for LogsAbovePrompt {
    fn drop(&mut self) {
        ABOVE_PROMPT
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A printer that keeps what it is given.
    #[derive(Clone, Default)]
    struct Kept(Arc<Mutex<Vec<String>>>);

    impl ExternalPrinter for Kept {
        fn print(&mut self, msg: String) -> rustyline::Result<()> {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(msg);
            Ok(())
        }
    }

    #[test]
    fn events_go_above_the_prompt_whole_while_the_guard_lives() {
        let kept = Kept::default();
        let guard = above_prompt(kept.clone()).expect("a printer thread");
        {
            let mut writer = LogOutput.make_writer();
            writer.write_all(b"INFO one ").expect("write");
            writer.write_all(b"event\n").expect("write");
        }
        drop(guard);
        assert!(matches!(LogOutput.make_writer(), LogWriter::Stderr(_)));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while kept
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
        {
            assert!(std::time::Instant::now() < deadline, "never printed");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(
            *kept.0.lock().unwrap_or_else(PoisonError::into_inner),
            ["INFO one event\n"]
        );
    }
}
