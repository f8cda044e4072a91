//! `notes`: remembers what each sender asks it to, in an embedded SQLite
//! database, and tells it back on request.
//!
//! The plugin offers
//!
//! * the `REMEMBER` action, for messages that start with "remember " or
//!   "note that " (any case). It stores the rest of the message as a note of
//!   the message's sender and answers "Noted: <the note>";
//! * the `RECALL` action, for messages that start with "recall" or that
//!   contain "what did I tell you" or "my notes". It answers with the
//!   sender's notes as a numbered list, oldest first, or "You have no notes
//!   yet.". "recall <words>" lists only the notes that contain those words
//!   (see [`recall_query`]);
//! * the `notes` service, which owns the database: `remember {sender, text}
//!   -> {id}`, `recall {sender, query?, limit?} -> [{id, text, created_at}]`,
//!   `forget {sender, id} -> bool` and `count {sender} -> u64`. Every method
//!   works on one sender's notes only. `remember` emits `notes:remembered`
//!   with `{sender, id}` once the note is stored;
//! * the `notes-count` provider: `{"count": n}`, how many notes the message's
//!   sender has (0 for a message without a sender).
//!
//! # The database
//!
//! The config key `database` names the SQLite file (default `notes.sqlite3`;
//! a relative path is relative to the host process's working directory). The
//! special value `":memory:"` keeps the notes in memory, so they last only as
//! long as the service runs. The service opens the database when it starts,
//! creates its table if it is missing, and closes it when it stops; the
//! notes of a file database survive a restart of the host.
//!
//! Every statement is parameterized. `recall`'s `query` is a substring
//! filter through SQL `LIKE`, with `%`, `_` and the escape character itself
//! escaped, so a query matches only its own characters. Like SQLite's `LIKE`,
//! it ignores the case of ASCII letters only.
//!
//! Each loaded copy of this plugin carries its own copy of SQLite. Two copies
//! of SQLite in one process do not see each other's file locks, so two
//! copies in one process must never have the same file open at the same
//! time. A hot reload keeps to that on its own: the host stops the serving
//! generation's services (this one closes the file) before it starts the new
//! generation's (which opens it again), with every call held at the gate in
//! between. Two hosts in one process must give each its own file or
//! `":memory:"`.

use agent_host_plugin_sdk::{
    json, Action, ActionResult, Error, ErrorKind, Message, Plugin, Provider, Result, Runtime,
    Service, Value,
};
use rusqlite::{params, Connection};
use serde::{Deserialize, Serialize};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The service's name.
pub const SERVICE: &str = "notes";

/// The event emitted after a note is stored, with `{sender, id}` as payload.
pub const REMEMBERED_EVENT: &str = "notes:remembered";

/// The database used when the config does not name one: in memory, so that
/// nothing is written where the operator did not ask (the shipped
/// `agent.toml` names a file).
pub const DEFAULT_DATABASE: &str = IN_MEMORY;

/// The `database` value that keeps the notes in memory.
pub const IN_MEMORY: &str = ":memory:";

/// The longest note the service stores, in characters.
pub const MAX_NOTE_CHARS: usize = 10_000;

/// How many notes the `RECALL` action lists at most (the most recent ones).
pub const RECALL_LIST_LIMIT: u32 = 20;

/// How long a statement waits for a lock another connection holds on the file.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The reply of `RECALL` for a sender without notes.
pub const NO_NOTES_TEXT: &str = "You have no notes yet.";

/// The prefixes that make `REMEMBER` apply (matched ignoring ASCII case).
pub const REMEMBER_PREFIXES: [&str; 2] = ["remember ", "note that "];

/// The phrases that make `RECALL` apply anywhere in a message (in lowercase).
pub const RECALL_PHRASES: [&str; 2] = ["what did i tell you", "my notes"];

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS notes (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        sender     TEXT    NOT NULL,
        text       TEXT    NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE INDEX IF NOT EXISTS notes_by_sender ON notes (sender, id);
";

/// One stored note.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    /// The note's id, unique in the database and never reused.
    pub id: i64,
    /// What the sender asked to remember.
    pub text: String,
    /// When it was stored, in seconds since the Unix epoch (UTC).
    pub created_at: i64,
}

/// The arguments of `remember`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RememberRequest {
    /// Whose note it is.
    pub sender: String,
    /// The note (not empty, at most [`MAX_NOTE_CHARS`] characters).
    pub text: String,
}

/// What `remember` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remembered {
    /// The new note's id.
    pub id: i64,
}

/// The arguments of `recall`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecallRequest {
    /// Whose notes to list.
    pub sender: String,
    /// Lists only notes that contain this text (ASCII case ignored); absent
    /// or empty lists all.
    #[serde(default)]
    pub query: Option<String>,
    /// Lists at most this many notes, the most recent ones; absent lists all.
    #[serde(default)]
    pub limit: Option<u32>,
}

/// The arguments of `forget`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForgetRequest {
    /// Whose note it is.
    pub sender: String,
    /// The note's id.
    pub id: i64,
}

/// The arguments of `count`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountRequest {
    /// Whose notes to count.
    pub sender: String,
}

fn invalid(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidInput, message)
}

fn db_error(error: rusqlite::Error) -> Error {
    Error::msg(format!("notes database: {error}"))
}

fn check_sender(method: &str, sender: &str) -> Result<()> {
    if sender.is_empty() {
        return Err(invalid(format!("notes.{method}: `sender` is empty")));
    }
    Ok(())
}

/// Escapes `text` for a `LIKE ... ESCAPE '\'` pattern: `\`, `%` and `_`
/// match only themselves afterwards.
pub fn escape_like(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '\\' | '%' | '_') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

fn now_unix_seconds() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The `database` config value: a file path or [`IN_MEMORY`].
fn database_path(rt: &Runtime<'_>) -> Result<String> {
    match rt.config_value("database")? {
        Value::Null => Ok(DEFAULT_DATABASE.to_string()),
        Value::String(path) if !path.trim().is_empty() => Ok(path),
        other => Err(invalid(format!(
            "config `database` must be a file path or \":memory:\", not {other}"
        ))),
    }
}

/// Opens (creating if needed) the database at `path` and its table.
fn open(path: &str) -> Result<Connection> {
    let connection = if path == IN_MEMORY {
        Connection::open_in_memory()
    } else {
        Connection::open(path)
    }
    .map_err(|e| Error::msg(format!("cannot open notes database {path}: {e}")))?;
    connection.busy_timeout(BUSY_TIMEOUT).map_err(db_error)?;
    connection
        .execute_batch(SCHEMA)
        .map_err(|e| Error::msg(format!("cannot create the notes table in {path}: {e}")))?;
    Ok(connection)
}

/// An open database and the path it was opened from.
struct OpenDatabase {
    connection: Connection,
    path: String,
}

/// The `notes` service's state: the open database, while the service runs.
#[derive(Default)]
pub struct NotesService {
    database: Mutex<Option<OpenDatabase>>,
}

impl NotesService {
    fn lock(&self) -> MutexGuard<'_, Option<OpenDatabase>> {
        // Each critical section runs single statements, which SQLite applies
        // whole or not at all: a poisoned lock hides no half-made change.
        self.database.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `work` on the open database; fails when the service is stopped.
    fn with_db<T>(&self, work: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        match self.lock().as_ref() {
            Some(open) => work(&open.connection).map_err(db_error),
            None => Err(Error::new(
                ErrorKind::Unavailable,
                "the notes database is not open (the service is stopped)",
            )),
        }
    }

    fn start(&self, rt: &Runtime<'_>) -> Result<()> {
        let path = database_path(rt)?;
        let connection = open(&path)?;
        rt.info(format!("notes database open: {path}"));
        let previous = self.lock().replace(OpenDatabase { connection, path });
        if let Some(previous) = previous {
            if let Err((_, error)) = previous.connection.close() {
                rt.warn(format!("closing the previous notes database: {error}"));
            }
        }
        Ok(())
    }

    fn stop(&self, rt: &Runtime<'_>) -> Result<()> {
        let database = self.lock().take();
        if let Some(OpenDatabase { connection, path }) = database {
            connection
                .close()
                .map_err(|(_, e)| Error::msg(format!("closing the notes database {path}: {e}")))?;
            rt.info(format!("notes database closed: {path}"));
        }
        Ok(())
    }

    fn remember(&self, request: RememberRequest, rt: &Runtime<'_>) -> Result<Remembered> {
        check_sender("remember", &request.sender)?;
        let text = request.text.trim();
        if text.is_empty() {
            return Err(invalid("notes.remember: `text` is empty"));
        }
        let chars = text.chars().count();
        if chars > MAX_NOTE_CHARS {
            return Err(invalid(format!(
                "notes.remember: the note has {chars} characters, more than {MAX_NOTE_CHARS}"
            )));
        }
        let id = self.with_db(|db| {
            db.execute(
                "INSERT INTO notes (sender, text, created_at) VALUES (?1, ?2, ?3)",
                params![request.sender, text, now_unix_seconds()],
            )?;
            Ok(db.last_insert_rowid())
        })?;
        // Emitted after the lock is released: a handler may call back into
        // this service.
        rt.emit(
            REMEMBERED_EVENT,
            &json!({ "sender": request.sender, "id": id }),
        )?;
        Ok(Remembered { id })
    }

    fn recall(&self, request: RecallRequest, _rt: &Runtime<'_>) -> Result<Vec<Note>> {
        check_sender("recall", &request.sender)?;
        let pattern = request
            .query
            .as_deref()
            .filter(|q| !q.is_empty())
            .map(|q| format!("%{}%", escape_like(q)));
        let limit = request.limit.map_or(-1, i64::from);
        self.with_db(|db| {
            let mut statement = db.prepare_cached(
                "SELECT id, text, created_at FROM (
                     SELECT id, text, created_at FROM notes
                     WHERE sender = ?1 AND (?2 IS NULL OR text LIKE ?2 ESCAPE '\\')
                     ORDER BY id DESC LIMIT ?3
                 ) ORDER BY id ASC",
            )?;
            let notes = statement.query_map(params![request.sender, pattern, limit], |row| {
                Ok(Note {
                    id: row.get(0)?,
                    text: row.get(1)?,
                    created_at: row.get(2)?,
                })
            })?;
            notes.collect()
        })
    }

    fn forget(&self, request: ForgetRequest, _rt: &Runtime<'_>) -> Result<bool> {
        check_sender("forget", &request.sender)?;
        let deleted = self.with_db(|db| {
            db.execute(
                "DELETE FROM notes WHERE id = ?1 AND sender = ?2",
                params![request.id, request.sender],
            )
        })?;
        Ok(deleted > 0)
    }

    fn count(&self, request: CountRequest, _rt: &Runtime<'_>) -> Result<u64> {
        check_sender("count", &request.sender)?;
        let count: i64 = self.with_db(|db| {
            db.query_row(
                "SELECT COUNT(*) FROM notes WHERE sender = ?1",
                params![request.sender],
                |row| row.get(0),
            )
        })?;
        Ok(u64::try_from(count).unwrap_or(0))
    }
}

/// `text` without `prefix` at its start, ignoring ASCII case; `None` when it
/// does not start with it.
fn strip_prefix_ignore_case<'t>(text: &'t str, prefix: &str) -> Option<&'t str> {
    let head = text.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        text.get(prefix.len()..)
    } else {
        None
    }
}

/// The note a `REMEMBER` message asks to store (possibly empty), or `None`
/// when the message does not start with one of [`REMEMBER_PREFIXES`].
pub fn note_to_remember(text: &str) -> Option<&str> {
    let text = text.trim_start();
    REMEMBER_PREFIXES
        .iter()
        .find_map(|prefix| strip_prefix_ignore_case(text, prefix))
        .map(str::trim)
}

/// Whether a message asks for the sender's notes.
pub fn asks_to_recall(text: &str) -> bool {
    let lower = text.trim_start().to_lowercase();
    lower.starts_with("recall") || RECALL_PHRASES.iter().any(|p| lower.contains(p))
}

/// Words after "recall" that ask for every note rather than filter them.
const RECALL_EVERYTHING: [&str; 7] = [
    "",
    "notes",
    "my notes",
    "all",
    "all notes",
    "all my notes",
    "everything",
];

/// Words after "recall" that introduce the filter, as in "recall notes about milk".
const RECALL_FILTER_INTROS: [&str; 3] = ["my notes about ", "notes about ", "about "];

/// The filter of a `RECALL` message: the words after "recall " ("recall
/// milk" lists the notes that contain "milk"), without trailing punctuation
/// and without an introduction such as "notes about ". `None` lists every
/// note: for "recall", "recall my notes", "what did I tell you?"...
pub fn recall_query(text: &str) -> Option<&str> {
    let rest = strip_prefix_ignore_case(text.trim_start(), "recall")?;
    if !rest.is_empty() && !rest.starts_with(char::is_whitespace) {
        return None; // "recalled", "recalls"...
    }
    let mut query = rest
        .trim()
        .trim_end_matches(|c: char| c.is_ascii_punctuation() && c != '%' && c != '_')
        .trim_end();
    if RECALL_EVERYTHING
        .iter()
        .any(|all| query.eq_ignore_ascii_case(all))
    {
        return None;
    }
    if let Some(filter) = RECALL_FILTER_INTROS
        .iter()
        .find_map(|intro| strip_prefix_ignore_case(query, intro))
    {
        query = filter.trim_start();
    }
    (!query.is_empty()).then_some(query)
}

/// The reply text listing `notes` (numbered from 1); `more` says that older
/// notes were left out.
pub fn describe_notes(notes: &[Note], query: Option<&str>, more: bool) -> String {
    if notes.is_empty() {
        return match query {
            Some(query) => format!("You have no notes containing \"{query}\"."),
            None => NO_NOTES_TEXT.to_string(),
        };
    }
    let mut text = match (query, more) {
        (Some(query), false) => format!("Your notes containing \"{query}\":"),
        (Some(query), true) => format!("Your latest {} notes containing \"{query}\":", notes.len()),
        (None, false) => "Your notes:".to_string(),
        (None, true) => format!("Your latest {} notes:", notes.len()),
    };
    for (number, note) in notes.iter().enumerate() {
        text.push_str(&format!("\n{}. {}", number + 1, note.text));
    }
    text
}

/// The reply for a message without a sender: notes are kept per sender.
const NO_SENDER_TEXT: &str = "I can only keep notes for a known sender.";

fn handle_remember(message: &Message<'_>, rt: &Runtime<'_>) -> Result<ActionResult> {
    let sender = message.sender();
    if sender.is_empty() {
        return Ok(ActionResult::text(NO_SENDER_TEXT));
    }
    let note = note_to_remember(message.text()).unwrap_or_default();
    if note.is_empty() {
        return Ok(ActionResult::text(
            "What should I remember? Say \"remember <something>\".",
        ));
    }
    let remembered: Remembered = rt.service(SERVICE).call(
        "remember",
        &RememberRequest {
            sender: sender.to_string(),
            text: note.to_string(),
        },
    )?;
    rt.info(format!("stored note {} for {sender}", remembered.id));
    ActionResult::text(format!("Noted: {note}"))
        .with_data(json!({ "id": remembered.id, "text": note }))
}

fn handle_recall(message: &Message<'_>, rt: &Runtime<'_>) -> Result<ActionResult> {
    let sender = message.sender();
    if sender.is_empty() {
        return Ok(ActionResult::text(NO_SENDER_TEXT));
    }
    let query = recall_query(message.text());
    let mut notes: Vec<Note> = rt.service(SERVICE).call(
        "recall",
        &RecallRequest {
            sender: sender.to_string(),
            query: query.map(str::to_string),
            limit: Some(RECALL_LIST_LIMIT + 1),
        },
    )?;
    // One more than the list shows tells whether older notes were left out.
    let more = notes.len() > RECALL_LIST_LIMIT as usize;
    if more {
        notes.remove(0);
    }
    ActionResult::text(describe_notes(&notes, query, more))
        .with_data(json!({ "notes": notes, "query": query }))
}

fn provide_count(message: &Message<'_>, rt: &Runtime<'_>) -> Result<Value> {
    let sender = message.sender();
    if sender.is_empty() {
        return Ok(json!({ "count": 0 }));
    }
    let count: u64 = rt.service(SERVICE).call(
        "count",
        &CountRequest {
            sender: sender.to_string(),
        },
    )?;
    Ok(json!({ "count": count }))
}

/// The JSON Schema of the plugin's config.
pub fn config_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "database": {
                "type": "string",
                "minLength": 1,
                "default": DEFAULT_DATABASE,
                "description": "Path of the SQLite file that holds the notes (relative to the host's working directory), or \":memory:\" for notes that last only while the service runs."
            }
        },
        "additionalProperties": false
    })
}

/// Builds the `notes` plugin.
pub fn plugin() -> Plugin {
    Plugin::new("notes", "1.0.0")
        .description("Keeps notes per sender in a SQLite database and tells them back")
        .author("agent-host examples")
        .license("MIT OR Apache-2.0")
        .permission("event:emit:notes:*")
        // Reading its own config is a permission like any other.
        .permission("config:*")
        .config_schema(config_schema())
        .default_config(json!({ "database": DEFAULT_DATABASE }))
        .service(
            Service::new(SERVICE, NotesService::default())
                .description(
                    "remember {sender, text} -> {id}; recall {sender, query?, limit?} -> \
                     [{id, text, created_at}]; forget {sender, id} -> bool; count {sender} -> n",
                )
                .on_start(NotesService::start)
                .on_stop(NotesService::stop)
                .method("remember", NotesService::remember)
                .method("recall", NotesService::recall)
                .method("forget", NotesService::forget)
                .method("count", NotesService::count),
        )
        .action(
            Action::new("REMEMBER")
                .description("Stores a note for the sender: \"remember ...\" or \"note that ...\"")
                .priority(5)
                .example("remember buy milk", "Noted: buy milk")
                .example(
                    "Note that the meeting moved to Friday",
                    "Noted: the meeting moved to Friday",
                )
                .validate(|message| note_to_remember(message.text()).is_some())
                .handler(handle_remember),
        )
        .action(
            Action::new("RECALL")
                .description(
                    "Lists the sender's notes, oldest first; \"recall <words>\" lists those containing the words",
                )
                .priority(5)
                .example("recall", "Your notes:\n1. buy milk")
                .example("What did I tell you?", "Your notes:\n1. buy milk")
                .validate(|message| asks_to_recall(message.text()))
                .handler(handle_recall),
        )
        .provider(
            Provider::new("notes-count")
                .description("{\"count\": n}: how many notes the message's sender has")
                .get(provide_count),
        )
}

agent_host_plugin_sdk::export_plugin!(plugin);

#[cfg(test)]
mod tests {
    use super::*;
    use agent_host_plugin_sdk::testing::TestHost;

    fn memory_host() -> TestHost {
        TestHost::new("notes").with_config(json!({"database": IN_MEMORY}))
    }

    fn remember(
        loaded: &agent_host_plugin_sdk::testing::LoadedPlugin<'_>,
        sender: &str,
        text: &str,
    ) -> i64 {
        loaded
            .call_service("notes", "remember", json!({"sender": sender, "text": text}))
            .unwrap()["id"]
            .as_i64()
            .unwrap()
    }

    fn recall_texts(
        loaded: &agent_host_plugin_sdk::testing::LoadedPlugin<'_>,
        sender: &str,
        query: Option<&str>,
    ) -> Vec<String> {
        let notes = loaded
            .call_service("notes", "recall", json!({"sender": sender, "query": query}))
            .unwrap();
        notes
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["text"].as_str().unwrap().to_string())
            .collect()
    }

    fn from(sender: &str, text: &'static str) -> Message<'static> {
        Message::new(text).with_sender(sender)
    }

    #[test]
    fn manifest_is_valid() {
        let manifest = plugin().manifest();
        manifest.validate().unwrap();
        assert!(plugin().problems().is_empty());
        assert_eq!(
            manifest.services[0].methods,
            ["remember", "recall", "forget", "count"]
        );
        let actions: Vec<(&str, i32)> = manifest
            .actions
            .iter()
            .map(|a| (a.name.as_str(), a.priority))
            .collect();
        assert_eq!(actions, [("REMEMBER", 5), ("RECALL", 5)]);
        assert_eq!(manifest.providers[0].name, "notes-count");
        assert!(manifest.providers[0].cache.is_none());
        assert_eq!(manifest.permissions, ["event:emit:notes:*", "config:*"]);
        assert_eq!(
            manifest.default_config,
            Some(json!({"database": ":memory:"}))
        );
    }

    #[test]
    fn remember_recall_forget_count() {
        let host = memory_host();
        let loaded = host.load(plugin()).unwrap();
        let first = remember(&loaded, "alice", "buy milk");
        let second = remember(&loaded, "alice", "  call Bob  ");
        remember(&loaded, "bob", "bob's secret");
        assert!(second > first);

        assert_eq!(
            recall_texts(&loaded, "alice", None),
            ["buy milk", "call Bob"]
        );
        assert_eq!(recall_texts(&loaded, "bob", None), ["bob's secret"]);
        assert!(recall_texts(&loaded, "carol", None).is_empty());

        let notes = loaded
            .call_service("notes", "recall", json!({"sender": "alice"}))
            .unwrap();
        let notes: Vec<Note> = serde_json::from_value(notes).unwrap();
        assert_eq!(notes[0].id, first);
        assert!(notes[0].created_at > 1_600_000_000, "{notes:?}");

        let count = |sender: &str| {
            loaded
                .call_service("notes", "count", json!({"sender": sender}))
                .unwrap()
        };
        assert_eq!(count("alice"), json!(2));
        assert_eq!(count("carol"), json!(0));

        // Only the owner can forget a note, and only once.
        let forget = |sender: &str, id: i64| {
            loaded
                .call_service("notes", "forget", json!({"sender": sender, "id": id}))
                .unwrap()
        };
        assert_eq!(forget("bob", first), json!(false));
        assert_eq!(forget("alice", first), json!(true));
        assert_eq!(forget("alice", first), json!(false));
        assert_eq!(forget("alice", -7), json!(false));
        assert_eq!(count("alice"), json!(1));
        assert_eq!(recall_texts(&loaded, "alice", None), ["call Bob"]);

        // Ids are never reused after a note is forgotten.
        assert!(remember(&loaded, "alice", "again") > second);

        let events = host.emitted();
        assert_eq!(events.len(), 4);
        assert_eq!(events[0].name, "notes:remembered");
        assert_eq!(events[0].payload, json!({"sender": "alice", "id": first}));
    }

    #[test]
    fn recall_filters_case_insensitively_and_limits_to_the_latest() {
        let host = memory_host();
        let loaded = host.load(plugin()).unwrap();
        for text in ["Buy MILK", "walk the dog", "milkshake recipe", "call mum"] {
            remember(&loaded, "alice", text);
        }
        assert_eq!(
            recall_texts(&loaded, "alice", Some("milk")),
            ["Buy MILK", "milkshake recipe"]
        );
        assert_eq!(recall_texts(&loaded, "alice", Some("")).len(), 4);
        assert!(recall_texts(&loaded, "alice", Some("cheese")).is_empty());
        assert!(recall_texts(&loaded, "bob", Some("milk")).is_empty());

        let latest = loaded
            .call_service("notes", "recall", json!({"sender": "alice", "limit": 2}))
            .unwrap();
        let texts: Vec<&str> = latest
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["text"].as_str().unwrap())
            .collect();
        assert_eq!(
            texts,
            ["milkshake recipe", "call mum"],
            "latest two, oldest first"
        );
        let none = loaded
            .call_service("notes", "recall", json!({"sender": "alice", "limit": 0}))
            .unwrap();
        assert_eq!(none, json!([]));
    }

    #[test]
    fn like_wildcards_in_a_query_match_only_themselves() {
        let host = memory_host();
        let loaded = host.load(plugin()).unwrap();
        for text in ["plain note", "50% off", "snake_case", "back\\slash", "xyz"] {
            remember(&loaded, "alice", text);
        }
        assert_eq!(recall_texts(&loaded, "alice", Some("%")), ["50% off"]);
        assert_eq!(recall_texts(&loaded, "alice", Some("_")), ["snake_case"]);
        assert_eq!(recall_texts(&loaded, "alice", Some("\\")), ["back\\slash"]);
        assert!(recall_texts(&loaded, "alice", Some("x_z")).is_empty());
        assert!(recall_texts(&loaded, "alice", Some("%%")).is_empty());
        // Quotes are data, not SQL.
        assert!(recall_texts(&loaded, "alice", Some("' OR 1=1 --")).is_empty());
        assert_eq!(escape_like("a%b_c\\d"), "a\\%b\\_c\\\\d");
    }

    #[test]
    fn the_service_checks_its_arguments() {
        let host = memory_host();
        let loaded = host.load(plugin()).unwrap();
        for (method, args) in [
            ("remember", json!({"sender": "", "text": "x"})),
            ("remember", json!({"sender": "alice", "text": "   "})),
            (
                "remember",
                json!({"sender": "alice", "text": "x".repeat(MAX_NOTE_CHARS + 1)}),
            ),
            ("remember", json!({"sender": "alice"})),
            (
                "remember",
                json!({"sender": "alice", "text": "x", "extra": 1}),
            ),
            ("recall", json!({"sender": "alice", "limit": -1})),
            ("recall", json!(null)),
            ("forget", json!({"sender": "alice", "id": "one"})),
            ("count", json!({"sender": ""})),
        ] {
            let error = loaded
                .call_service("notes", method, args.clone())
                .unwrap_err();
            assert_eq!(
                error.kind(),
                ErrorKind::InvalidInput,
                "{method} {args}: {error:?}"
            );
        }
        assert!(host.emitted().is_empty());
    }

    #[test]
    fn remember_action() {
        let host = memory_host();
        let loaded = host.load(plugin()).unwrap();
        for text in [
            "remember buy milk",
            "Remember to call Bob",
            "  NOTE THAT the meeting moved",
            "note that ",
        ] {
            assert!(loaded.validate("REMEMBER", text).unwrap(), "{text}");
        }
        for text in [
            "remember",
            "I remember you",
            "notes",
            "recall",
            "",
            "rememberé",
        ] {
            assert!(!loaded.validate("REMEMBER", text).unwrap(), "{text}");
        }

        let result = loaded
            .handle_message("REMEMBER", &from("alice", "remember buy milk"))
            .unwrap();
        assert_eq!(result.text, "Noted: buy milk");
        let id = result.data["id"].as_i64().unwrap();
        let result = loaded
            .handle_message("REMEMBER", &from("alice", "Note that the café opens at 8"))
            .unwrap();
        assert_eq!(result.text, "Noted: the café opens at 8");
        assert_eq!(
            recall_texts(&loaded, "alice", None),
            ["buy milk", "the café opens at 8"]
        );
        assert_eq!(
            host.emitted()[0].payload,
            json!({"sender": "alice", "id": id})
        );

        // Nothing to store, or nobody to store it for.
        let result = loaded
            .handle_message("REMEMBER", &from("alice", "remember   "))
            .unwrap();
        assert!(
            result.text.starts_with("What should I remember?"),
            "{}",
            result.text
        );
        let result = loaded.handle("REMEMBER", "remember buy milk").unwrap();
        assert_eq!(result.text, NO_SENDER_TEXT);
        assert_eq!(host.emitted().len(), 2);
    }

    #[test]
    fn recall_action() {
        let host = memory_host();
        let loaded = host.load(plugin()).unwrap();
        for text in [
            "recall",
            "Recall milk",
            "What did I tell you?",
            "show me my notes",
            "RECALL everything",
        ] {
            assert!(loaded.validate("RECALL", text).unwrap(), "{text}");
        }
        for text in ["remember buy milk", "what did you say", "notes", ""] {
            assert!(!loaded.validate("RECALL", text).unwrap(), "{text}");
        }

        let recall = |sender: &str, text: &'static str| {
            loaded
                .handle_message("RECALL", &from(sender, text))
                .unwrap()
        };
        assert_eq!(recall("alice", "recall").text, NO_NOTES_TEXT);
        loaded
            .handle_message("REMEMBER", &from("alice", "remember buy milk"))
            .unwrap();
        loaded
            .handle_message("REMEMBER", &from("alice", "remember call Bob"))
            .unwrap();

        let result = recall("alice", "recall");
        assert_eq!(result.text, "Your notes:\n1. buy milk\n2. call Bob");
        assert_eq!(result.data["notes"][1]["text"], "call Bob");
        assert_eq!(result.data["query"], Value::Null);
        assert_eq!(recall("alice", "What did I tell you?").text, result.text);
        assert_eq!(recall("alice", "recall my notes").text, result.text);

        let result = recall("alice", "recall MILK?");
        assert_eq!(result.text, "Your notes containing \"MILK\":\n1. buy milk");
        assert_eq!(result.data["query"], "MILK");
        assert_eq!(
            recall("alice", "recall notes about bob").text,
            "Your notes containing \"bob\":\n1. call Bob"
        );
        assert_eq!(
            recall("alice", "recall %").text,
            "You have no notes containing \"%\"."
        );
        assert_eq!(recall("bob", "recall").text, NO_NOTES_TEXT);
        assert_eq!(
            loaded.handle("RECALL", "recall").unwrap().text,
            NO_SENDER_TEXT
        );
    }

    #[test]
    fn recall_action_lists_the_latest_notes() {
        let host = memory_host();
        let loaded = host.load(plugin()).unwrap();
        let total = RECALL_LIST_LIMIT + 3;
        for n in 1..=total {
            remember(&loaded, "alice", &format!("note {n}"));
        }
        let result = loaded
            .handle_message("RECALL", &from("alice", "recall"))
            .unwrap();
        let lines: Vec<&str> = result.text.lines().collect();
        assert_eq!(lines[0], format!("Your latest {RECALL_LIST_LIMIT} notes:"));
        assert_eq!(lines.len(), RECALL_LIST_LIMIT as usize + 1);
        assert_eq!(lines[1], "1. note 4");
        assert_eq!(
            lines.last().copied(),
            Some(format!("20. note {total}").as_str())
        );
    }

    #[test]
    fn recall_query_extraction() {
        assert_eq!(recall_query("recall"), None);
        assert_eq!(recall_query("recall  "), None);
        assert_eq!(recall_query("recall milk"), Some("milk"));
        assert_eq!(recall_query("  Recall  buy milk!  "), Some("buy milk"));
        assert_eq!(recall_query("recall 50%"), Some("50%"));
        assert_eq!(recall_query("recall all my notes."), None);
        assert_eq!(
            recall_query("recall my notes about the trip"),
            Some("the trip")
        );
        assert_eq!(recall_query("recalled milk"), None);
        assert_eq!(recall_query("what did I tell you about milk?"), None);
        assert_eq!(recall_query("recall?"), None);
    }

    #[test]
    fn provider_counts_the_senders_notes() {
        let host = memory_host();
        let loaded = host.load(plugin()).unwrap();
        remember(&loaded, "alice", "one");
        remember(&loaded, "alice", "two");
        let provider = &loaded.plugin().providers()[0];
        let count = |message: &Message<'_>| provider.fetch(message, &host.runtime()).unwrap();
        assert_eq!(count(&from("alice", "hi")), json!({"count": 2}));
        assert_eq!(count(&from("bob", "hi")), json!({"count": 0}));
        assert_eq!(count(&Message::new("hi")), json!({"count": 0}));
        assert_eq!(
            loaded.provide("notes-count", "hi").unwrap(),
            json!({"count": 0})
        );
    }

    #[test]
    fn notes_persist_in_a_database_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notes.sqlite3");
        let config = json!({"database": path.to_str().unwrap()});
        {
            let host = TestHost::new("notes").with_config(config.clone());
            let loaded = host.load(plugin()).unwrap();
            remember(&loaded, "alice", "buy milk");
            loaded.unload().unwrap();
            assert!(host
                .logs()
                .iter()
                .any(|(_, line)| line.starts_with("notes database closed: ")));
        }
        assert!(path.exists());
        let host = TestHost::new("notes").with_config(config);
        let loaded = host.load(plugin()).unwrap();
        assert_eq!(recall_texts(&loaded, "alice", None), ["buy milk"]);
    }

    #[test]
    fn a_stopped_service_or_a_bad_database_is_an_error() {
        let host = memory_host();
        let loaded = host.load(plugin()).unwrap();
        let service = loaded.plugin().service_named("notes").unwrap();
        service.stop(&host.runtime()).unwrap();
        let error = loaded
            .call_service("notes", "count", json!({"sender": "alice"}))
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Unavailable);

        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-folder").join("notes.sqlite3");
        let host = TestHost::new("notes").with_config(json!({"database": missing.to_str()}));
        let error = host.load(plugin()).err().unwrap();
        assert!(
            error.message().contains("cannot open notes database"),
            "{error:?}"
        );

        for database in [json!(7), json!("  ")] {
            let host = TestHost::new("notes").with_config(json!({"database": database}));
            let error = host.load(plugin()).err().unwrap();
            assert_eq!(error.kind(), ErrorKind::InvalidInput, "{error:?}");
            assert!(error.message().contains("database"), "{error:?}");
        }
    }
}
