//! The chat on a terminal: each line typed is a message from `operator`,
//! or an operator command (`/reload NAME`, `/plugins`).
//!
//! Lines are read with a line editor (rustyline): arrows, Home/End and the
//! usual Emacs keys edit the line, Up and Down (and Ctrl-R) recall the
//! lines typed earlier in the session (kept in memory, not on disk). While
//! the prompt waits, log lines are printed above it ([`log_output`]), never
//! into the line being typed.
//!
//! The editor blocks, so it reads on a thread of its own and hands each
//! line to the chat, which answers it; the prompt comes back once the
//! answer is printed. Ctrl-D on an empty line ends the chat (an agent with
//! `--listen` goes on serving HTTP); Ctrl-C asks the agent to stop.
//!
//! [`log_output`]: super::log_output

use super::log_output;
use crate::pipeline::{InboundMessage, Reply};
use crate::{PluginHost, WhenUnchanged};
use rustyline::error::ReadlineError;
use rustyline::{Config, DefaultEditor};
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::thread::JoinHandle;
use tokio::sync::{mpsc, oneshot};

/// The prompt.
const PROMPT: &str = "> ";

/// How many lines the history keeps.
const HISTORY_LINES: usize = 1000;

/// How the chat ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ChatEnd {
    /// Ctrl-D: the operator is done typing.
    Closed,
    /// Ctrl-C: the operator asks the agent to stop.
    Interrupted,
}

/// What the prompt thread hands the chat.
enum Typed {
    /// A line, and where its answer goes.
    Line {
        text: String,
        answer: oneshot::Sender<String>,
    },
    /// The end of the chat, or why the terminal cannot be read.
    End(Result<ChatEnd, TerminalUnreadable>),
}

/// Runs the chat until Ctrl-D or Ctrl-C.
pub(super) async fn chat(host: Arc<PluginHost>) -> Result<ChatEnd, Box<dyn std::error::Error>> {
    // Dropped last: the terminal as it was, even if the agent stops while
    // the editor reads in raw mode.
    let _terminal = crate::sys::TerminalMode::of_stdin();
    let mut editor = DefaultEditor::with_config(
        Config::builder()
            .max_history_size(HISTORY_LINES)?
            .history_ignore_dups(true)?
            // Bracketed paste is a terminal mode that would outlive an
            // agent stopped while the editor reads; a pasted line break
            // sends the line, as typing one does.
            .bracketed_paste(false)
            .build(),
    )?;
    // Only when the log goes to this terminal anyway.
    let _logs = match editor.create_external_printer() {
        Ok(printer) if std::io::stderr().is_terminal() => Some(log_output::above_prompt(printer)?),
        _ => None,
    };
    say("agent-host ready. Type a message, /plugins or /reload NAME (Ctrl-D to quit).");
    let (typed, mut lines) = mpsc::channel(1);
    let prompt = PromptThread(Some(
        std::thread::Builder::new()
            .name("chat prompt".into())
            .spawn(move || read_lines(editor, &typed))?,
    ));
    while let Some(typed) = lines.recv().await {
        match typed {
            Typed::Line { text, answer } => {
                // A closed answer means the prompt thread is gone.
                let _ = answer.send(respond(&host, &text).await?);
            }
            Typed::End(end) => {
                prompt.ended();
                return end.map_err(Into::into);
            }
        }
    }
    Ok(ChatEnd::Closed)
}

/// The thread that reads lines; when the chat ends while it still waits
/// for a line (the agent stops), its prompt's line is ended, so that
/// whatever is printed next starts on a line of its own.
struct PromptThread(Option<JoinHandle<()>>);

impl PromptThread {
    /// The thread has stopped reading (and is ending).
    fn ended(mut self) {
        self.0 = None;
    }
}

impl Drop for PromptThread {
    fn drop(&mut self) {
        if let Some(thread) = self.0.take() {
            if !thread.is_finished() {
                say("");
            }
        }
    }
}

/// Prints one line of the chat; a terminal gone only loses it.
fn say(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{text}");
    let _ = stdout.flush();
}

/// Reads lines with `editor` until Ctrl-D, Ctrl-C or an error, handing
/// each to the chat and printing its answer before the next prompt.
fn read_lines(mut editor: DefaultEditor, typed: &mpsc::Sender<Typed>) {
    let end = loop {
        match editor.readline(PROMPT) {
            Ok(line) => {
                let text = line.trim();
                if text.is_empty() {
                    continue;
                }
                // The history is in memory; adding cannot fail.
                let _ = editor.add_history_entry(text);
                let (answer, answered) = oneshot::channel();
                let line = Typed::Line {
                    text: text.to_string(),
                    answer,
                };
                if typed.blocking_send(line).is_err() {
                    return;
                }
                match answered.blocking_recv() {
                    Ok(text) => say(&text),
                    Err(_) => return,
                }
            }
            Err(ReadlineError::Eof) => break Ok(ChatEnd::Closed),
            Err(ReadlineError::Interrupted) => break Ok(ChatEnd::Interrupted),
            Err(error) => break Err(TerminalUnreadable(error)),
        }
    };
    let _ = typed.blocking_send(Typed::End(end));
}

/// The line editor failed to read the terminal: the chat ends.
#[derive(Debug, thiserror::Error)]
#[error("the chat cannot read the terminal: {0}")]
pub(super) struct TerminalUnreadable(#[source] ReadlineError);

/// The answer to one line typed.
async fn respond(host: &Arc<PluginHost>, line: &str) -> Result<String, tokio::task::JoinError> {
    if host.is_shutting_down() {
        return Ok(crate::SHUTTING_DOWN.to_string());
    }
    match line.strip_prefix('/') {
        Some(command) => operator_command(host, OperatorCommand::parse(command)).await,
        None => {
            let message = InboundMessage {
                sender: "operator".into(),
                text: line.to_string(),
                ..InboundMessage::default()
            };
            Ok(match host.answer_unless_shutting_down(message).await {
                Ok(answered) => reply_text(&answered.into_reply()),
                Err(error) => error.to_string(),
            })
        }
    }
}

/// A reply as the chat shows it: its text, then the evaluators' verdicts
/// and the errors, each on a line of its own.
fn reply_text(reply: &Reply) -> String {
    let mut text = reply.text.clone();
    if !reply.evaluations.is_empty() {
        let verdicts: Vec<String> = reply
            .evaluations
            .iter()
            .map(|e| {
                let mark = if e.evaluation.passed { "ok" } else { "flagged" };
                format!("{} {:.2} {mark}", e.evaluator, e.evaluation.score)
            })
            .collect();
        text.push_str(&format!("\n  [{}]", verdicts.join("; ")));
    }
    for error in &reply.errors {
        text.push_str(&format!("\n  ! {error}"));
    }
    text
}

/// The chat's operator commands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum OperatorCommand {
    /// `/reload NAME [--force]`: reload a plugin from its file (with
    /// `--force` even when it is byte-identical to the serving build).
    Reload(String, WhenUnchanged),
    /// `/plugins`: each plugin's version, generations and placement.
    Plugins,
    /// Anything else: the list of commands.
    Help,
}

impl OperatorCommand {
    /// The command in a line that started with `/` (without it).
    fn parse(command: &str) -> Self {
        let mut words = command.split_whitespace();
        match (words.next(), words.next()) {
            (Some("reload"), Some(name)) => match (words.next(), words.next()) {
                (None, _) => OperatorCommand::Reload(name.to_string(), WhenUnchanged::Skip),
                (Some("--force"), None) => {
                    OperatorCommand::Reload(name.to_string(), WhenUnchanged::Reload)
                }
                _ => OperatorCommand::Help,
            },
            (Some("plugins"), None) => OperatorCommand::Plugins,
            _ => OperatorCommand::Help,
        }
    }
}

/// What an operator command does, as text.
async fn operator_command(
    host: &Arc<PluginHost>,
    command: OperatorCommand,
) -> Result<String, tokio::task::JoinError> {
    Ok(match command {
        OperatorCommand::Reload(name, when_unchanged) => {
            let worker = Arc::clone(host);
            match tokio::task::spawn_blocking(move || {
                worker.reload_as(
                    &name,
                    None,
                    crate::ReloadOrigin::Cli { identity: None },
                    when_unchanged,
                )
            })
            .await?
            {
                Ok(done) if done.unchanged => format!(
                    "{} not reloaded: its file is byte-identical to the serving generation {} (/reload {} --force reloads it anyway)",
                    done.plugin, done.generation, done.plugin
                ),
                Ok(done) => format!(
                    "reloaded {} {} -> {} (generation {}, calls held {} us)",
                    done.plugin,
                    done.from_version,
                    done.to_version,
                    done.generation,
                    done.paused_us
                ),
                Err(failure) => failure.to_string(),
            }
        }
        OperatorCommand::Plugins => host
            .statuses()
            .iter()
            .map(|p| {
                format!(
                    "{} {} generation {} ({} generations mapped, {} KiB){}\n  runs {}",
                    p.name,
                    p.version,
                    p.generation,
                    p.mapped.generations,
                    p.mapped.bytes / 1024,
                    if p.quarantined { " QUARANTINED" } else { "" },
                    p.placement_line()
                )
            })
            .collect::<Vec<_>>()
            .join("\n"),
        OperatorCommand::Help => "commands: /reload NAME [--force], /plugins".to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_host_plugin_sdk::Evaluation;

    #[test]
    fn operator_commands_are_told_apart() {
        assert_eq!(
            OperatorCommand::parse("reload weather"),
            OperatorCommand::Reload("weather".into(), WhenUnchanged::Skip)
        );
        assert_eq!(
            OperatorCommand::parse("  reload   weather "),
            OperatorCommand::Reload("weather".into(), WhenUnchanged::Skip)
        );
        assert_eq!(
            OperatorCommand::parse("reload weather --force"),
            OperatorCommand::Reload("weather".into(), WhenUnchanged::Reload)
        );
        assert_eq!(
            OperatorCommand::parse("reload weather now"),
            OperatorCommand::Help
        );
        assert_eq!(OperatorCommand::parse("plugins"), OperatorCommand::Plugins);
        assert_eq!(OperatorCommand::parse("reload"), OperatorCommand::Help);
        assert_eq!(OperatorCommand::parse("plugins all"), OperatorCommand::Help);
        assert_eq!(OperatorCommand::parse(""), OperatorCommand::Help);
    }

    #[test]
    fn a_reply_shows_its_text_verdicts_and_errors() {
        let mut reply = Reply {
            text: "It is mild in Tokyo.".into(),
            ..Reply::default()
        };
        assert_eq!(reply_text(&reply), "It is mild in Tokyo.");
        reply
            .evaluations
            .push("sentiment", "tone", Evaluation::new(0.5, false));
        reply
            .errors
            .push("plugin 'weather': provider 'now' timed out".into());
        assert_eq!(
            reply_text(&reply),
            "It is mild in Tokyo.\n  [tone 0.50 flagged]\n  ! plugin 'weather': provider \
             'now' timed out"
        );
    }
}
