//! `notes`: remembers what each sender asks it to, in the agent's database
//! (the `database` plugin's service), and tells it back on request.
//!
//! The plugin offers
//!
//! * the `REMEMBER` action, for messages that start with "remember " or
//!   "note that " (any case). It stores the rest of the message as a note of
//!   the message's sender, keyed by the message's id, and answers "Noted:
//!   <the note>". A message handled twice (a cluster hands a message on when
//!   the host that had it died) stores its note once: the second run finds
//!   the note of that message id and answers "Noted" without writing again;
//! * the `RECALL` action, for messages that start with "recall" or that
//!   contain "what did I tell you" or "my notes". It answers with the
//!   sender's notes as a numbered list, oldest first, or "You have no notes
//!   yet.". "recall <words>" lists only the notes that contain those words
//!   (see [`recall_query`]);
//! * the `notes` service: `remember {sender, text, message_id?} -> {id,
//!   stored}`, `recall {sender, query?, limit?} -> [{id, text, created_at}]`,
//!   `forget {sender, id} -> bool` and `count {sender} -> u64`. Every method
//!   works on one sender's notes only. `remember` emits `notes:remembered`
//!   with `{sender, id}` once a note is stored (not when its message id
//!   was already stored: then `stored` is false);
//! * the `notes-count` provider: `{"count": n}`, how many notes the message's
//!   sender has (0 for a message without a sender).
//!
//! # The database
//!
//! The notes live in the table `notes` of the database the `database`
//! plugin serves (the dependency `database@^1`; grant `service:database`).
//! The service creates the table when it starts, with the DDL of the
//! database's dialect (SQLite or PostgreSQL). The notes outlive a reload of
//! either plugin and a restart of the host, and every host pointed at the
//! same database shares them. Every statement binds its values to `$N`
//! placeholders. `recall`'s `query` is a substring filter through `LIKE`
//! (`ILIKE` on PostgreSQL), with `%`, `_` and the escape character itself
//! escaped, so a query matches only its own characters; it ignores case
//! (ASCII letters only, on SQLite).

use agent_host_plugin_sdk::{
    json, Action, ActionResult, Error, ErrorKind, Message, Plugin, Provider, Result, Runtime,
    Service, Value,
};
use serde::{Deserialize, Serialize};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

/// The service's name.
pub const SERVICE: &str = "notes";

/// The service the notes are stored through.
pub const DATABASE_SERVICE: &str = "database";

/// The event emitted after a note is stored, with `{sender, id}` as payload.
pub const REMEMBERED_EVENT: &str = "notes:remembered";

/// The longest note the service stores, in characters.
pub const MAX_NOTE_CHARS: usize = 10_000;

/// How many notes the `RECALL` action lists at most (the most recent ones).
pub const RECALL_LIST_LIMIT: u32 = 20;

/// The reply of `RECALL` for a sender without notes.
pub const NO_NOTES_TEXT: &str = "You have no notes yet.";

/// The prefixes that make `REMEMBER` apply (matched ignoring ASCII case).
pub const REMEMBER_PREFIXES: [&str; 2] = ["remember ", "note that "];

/// The phrases that make `RECALL` apply anywhere in a message (in lowercase).
pub const RECALL_PHRASES: [&str; 2] = ["what did i tell you", "my notes"];

/// The table and its index on SQLite.
const SQLITE_SCHEMA: [&str; 2] = [
    "CREATE TABLE IF NOT EXISTS notes (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        sender     TEXT    NOT NULL,
        text       TEXT    NOT NULL,
        created_at INTEGER NOT NULL,
        message_id TEXT    UNIQUE
    )",
    "CREATE INDEX IF NOT EXISTS notes_by_sender ON notes (sender, id)",
];

/// The table and its index on PostgreSQL.
const POSTGRES_SCHEMA: [&str; 2] = [
    "CREATE TABLE IF NOT EXISTS notes (
        id         BIGSERIAL PRIMARY KEY,
        sender     TEXT   NOT NULL,
        text       TEXT   NOT NULL,
        created_at BIGINT NOT NULL,
        message_id TEXT   UNIQUE
    )",
    "CREATE INDEX IF NOT EXISTS notes_by_sender ON notes (sender, id)",
];

/// Stores a note unless its message id already has one; returns its id.
const INSERT_NOTE: &str = "INSERT INTO notes (sender, text, created_at, message_id) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (message_id) DO NOTHING RETURNING id";

/// The note already stored for a message id.
const NOTE_OF_MESSAGE: &str = "SELECT id FROM notes WHERE message_id = $1";

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
    /// The id of the message that asked for it: a message id stores one
    /// note, however often it is handled. Absent stores a note each time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
}

/// What `remember` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remembered {
    /// The note's id.
    pub id: i64,
    /// Whether this call stored it (false: its message id had stored it before).
    #[serde(default = "stored_by_default")]
    pub stored: bool,
}

fn stored_by_default() -> bool {
    true
}

/// The arguments of `recall`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecallRequest {
    /// Whose notes to list.
    pub sender: String,
    /// Lists only notes that contain this text (case ignored); absent or
    /// empty lists all.
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

/// The SQL dialect of the database the notes live in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    /// SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

fn invalid(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidInput, message)
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

/// The rows a `query` of the database service returns.
#[derive(Deserialize)]
struct Rows {
    rows: Vec<Vec<Value>>,
}

/// The answer of an `execute` of the database service.
#[derive(Deserialize)]
struct Executed {
    rows_affected: u64,
}

fn query(rt: &Runtime<'_>, sql: &str, params: Value) -> Result<Vec<Vec<Value>>> {
    let rows: Rows = rt
        .service(DATABASE_SERVICE)
        .call("query", &json!({ "sql": sql, "params": params }))?;
    Ok(rows.rows)
}

fn execute(rt: &Runtime<'_>, sql: &str, params: Value) -> Result<u64> {
    let executed: Executed = rt
        .service(DATABASE_SERVICE)
        .call("execute", &json!({ "sql": sql, "params": params }))?;
    Ok(executed.rows_affected)
}

/// The integer in the first column of `row`.
fn integer(method: &str, row: Option<&Vec<Value>>) -> Result<i64> {
    row.and_then(|row| row.first())
        .and_then(Value::as_i64)
        .ok_or_else(|| Error::msg(format!("notes.{method}: the database answered no id")))
}

/// The SQL of `recall`: the sender's latest notes (at most `$3` when
/// `limited`), those matching the pattern `$2` when it is not null, oldest
/// first.
fn recall_sql(dialect: Dialect, limited: bool) -> &'static str {
    match (dialect, limited) {
        (Dialect::Sqlite, false) => "SELECT id, text, created_at FROM (SELECT id, text, created_at FROM notes WHERE sender = $1 AND ($2 IS NULL OR text LIKE $2 ESCAPE '\\') ORDER BY id DESC) AS latest ORDER BY id ASC",
        (Dialect::Sqlite, true) => "SELECT id, text, created_at FROM (SELECT id, text, created_at FROM notes WHERE sender = $1 AND ($2 IS NULL OR text LIKE $2 ESCAPE '\\') ORDER BY id DESC LIMIT $3) AS latest ORDER BY id ASC",
        (Dialect::Postgres, false) => "SELECT id, text, created_at FROM (SELECT id, text, created_at FROM notes WHERE sender = $1 AND ($2::text IS NULL OR text ILIKE $2 ESCAPE '\\') ORDER BY id DESC) AS latest ORDER BY id ASC",
        (Dialect::Postgres, true) => "SELECT id, text, created_at FROM (SELECT id, text, created_at FROM notes WHERE sender = $1 AND ($2::text IS NULL OR text ILIKE $2 ESCAPE '\\') ORDER BY id DESC LIMIT $3) AS latest ORDER BY id ASC",
    }
}

/// The `notes` service's state: the database's dialect, while the service runs.
#[derive(Default)]
pub struct NotesService {
    dialect: Mutex<Option<Dialect>>,
}

impl NotesService {
    fn lock(&self) -> MutexGuard<'_, Option<Dialect>> {
        // A plain value, replaced whole: a poisoned lock hides nothing.
        self.dialect.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The dialect; fails when the service is stopped.
    fn dialect(&self) -> Result<Dialect> {
        (*self.lock())
            .ok_or_else(|| Error::new(ErrorKind::Unavailable, "the notes service is stopped"))
    }

    fn start(&self, rt: &Runtime<'_>) -> Result<()> {
        let dialect: Dialect = rt.service(DATABASE_SERVICE).call("dialect", &())?;
        let schema = match dialect {
            Dialect::Sqlite => SQLITE_SCHEMA,
            Dialect::Postgres => POSTGRES_SCHEMA,
        };
        for sql in schema {
            execute(rt, sql, json!([])).map_err(|e| {
                Error::new(
                    e.kind(),
                    format!("cannot create the notes table: {}", e.message()),
                )
            })?;
        }
        *self.lock() = Some(dialect);
        rt.info(format!("notes table ready ({dialect:?})"));
        Ok(())
    }

    fn stop(&self, _rt: &Runtime<'_>) -> Result<()> {
        *self.lock() = None;
        Ok(())
    }

    fn remember(&self, request: RememberRequest, rt: &Runtime<'_>) -> Result<Remembered> {
        check_sender("remember", &request.sender)?;
        self.dialect()?;
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
        let message_id = request.message_id.as_deref().filter(|id| !id.is_empty());
        let inserted = query(
            rt,
            INSERT_NOTE,
            json!([request.sender, text, now_unix_seconds(), message_id]),
        )?;
        if inserted.is_empty() {
            // The message id has its note already: answer with it.
            let existing = query(rt, NOTE_OF_MESSAGE, json!([message_id]))?;
            let id = integer("remember", existing.first())?;
            return Ok(Remembered { id, stored: false });
        }
        let id = integer("remember", inserted.first())?;
        rt.emit(
            REMEMBERED_EVENT,
            &json!({ "sender": request.sender, "id": id }),
        )?;
        Ok(Remembered { id, stored: true })
    }

    fn recall(&self, request: RecallRequest, rt: &Runtime<'_>) -> Result<Vec<Note>> {
        check_sender("recall", &request.sender)?;
        let dialect = self.dialect()?;
        let pattern = request
            .query
            .as_deref()
            .filter(|q| !q.is_empty())
            .map(|q| format!("%{}%", escape_like(q)));
        let (sql, params) = match request.limit {
            Some(limit) => (
                recall_sql(dialect, true),
                json!([request.sender, pattern, limit]),
            ),
            None => (recall_sql(dialect, false), json!([request.sender, pattern])),
        };
        query(rt, sql, params)?
            .into_iter()
            .map(|row| match row.as_slice() {
                [Value::Number(id), Value::String(text), Value::Number(created_at)] => Ok(Note {
                    id: id.as_i64().unwrap_or_default(),
                    text: text.clone(),
                    created_at: created_at.as_i64().unwrap_or_default(),
                }),
                other => Err(Error::msg(format!(
                    "notes.recall: the database answered an unexpected row {other:?}"
                ))),
            })
            .collect()
    }

    fn forget(&self, request: ForgetRequest, rt: &Runtime<'_>) -> Result<bool> {
        check_sender("forget", &request.sender)?;
        self.dialect()?;
        let deleted = execute(
            rt,
            "DELETE FROM notes WHERE id = $1 AND sender = $2",
            json!([request.id, request.sender]),
        )?;
        Ok(deleted > 0)
    }

    fn count(&self, request: CountRequest, rt: &Runtime<'_>) -> Result<u64> {
        check_sender("count", &request.sender)?;
        self.dialect()?;
        let rows = query(
            rt,
            "SELECT COUNT(*) FROM notes WHERE sender = $1",
            json!([request.sender]),
        )?;
        Ok(u64::try_from(integer("count", rows.first())?).unwrap_or(0))
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
    let message_id = message.id();
    let remembered: Remembered = rt.service(SERVICE).call(
        "remember",
        &RememberRequest {
            sender: sender.to_string(),
            text: note.to_string(),
            message_id: (!message_id.is_empty()).then(|| message_id.to_string()),
        },
    )?;
    if remembered.stored {
        rt.info(format!("stored note {} for {sender}", remembered.id));
    } else {
        rt.info(format!(
            "note {} of message {message_id} was stored before",
            remembered.id
        ));
    }
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

/// The JSON Schema of the plugin's config: it has none (the `database`
/// plugin's config says where the notes are kept).
pub fn config_schema() -> Value {
    json!({
        "type": "object",
        "properties": {},
        "additionalProperties": false
    })
}

/// Builds the `notes` plugin.
pub fn plugin() -> Plugin {
    Plugin::new("notes", "1.1.0")
        .description("Keeps notes per sender in the agent's database and tells them back")
        .author("agent-host examples")
        .license("MIT OR Apache-2.0")
        .dependency("database@^1")
        .permission("event:emit:notes:*")
        .permission("service:database")
        .config_schema(config_schema())
        .service(
            Service::new(SERVICE, NotesService::default())
                .description(
                    "remember {sender, text, message_id?} -> {id, stored}; recall {sender, query?, limit?} -> \
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
    use agent_host_plugin_sdk::testing::{LoadedPlugin, TestHost};
    use std::sync::Arc;

    /// The notes table of a fake `database` service: (id, sender, text,
    /// message id). It understands only the statements this plugin sends;
    /// the SQL itself runs against real databases in the integration tests.
    #[derive(Default)]
    struct FakeTable {
        notes: Vec<(i64, String, String, Option<String>)>,
        statements: Vec<String>,
    }

    fn fake_database(table: Arc<Mutex<FakeTable>>) -> impl Fn(&str, Value) -> Result<Value> {
        move |method, args| {
            let mut table = table.lock().unwrap();
            if method == "dialect" {
                return Ok(json!("sqlite"));
            }
            let sql = args["sql"].as_str().unwrap().to_string();
            let params = args["params"].as_array().cloned().unwrap_or_default();
            table.statements.push(sql.clone());
            let text = |i: usize| params[i].as_str().map(str::to_string);
            if sql.starts_with("CREATE") {
                Ok(json!({"rows_affected": 0}))
            } else if sql == INSERT_NOTE {
                let message_id = text(3);
                if message_id.is_some() && table.notes.iter().any(|n| n.3 == message_id) {
                    return Ok(json!({"columns": [], "rows": []}));
                }
                let id = table.notes.len() as i64 + 1;
                table
                    .notes
                    .push((id, text(0).unwrap(), text(1).unwrap(), message_id));
                Ok(json!({"columns": ["id"], "rows": [[id]]}))
            } else if sql == NOTE_OF_MESSAGE {
                let ids: Vec<Value> = table
                    .notes
                    .iter()
                    .filter(|n| n.3 == text(0))
                    .map(|n| json!([n.0]))
                    .collect();
                Ok(json!({"columns": ["id"], "rows": ids}))
            } else if sql.starts_with("SELECT COUNT(*)") {
                let count = table
                    .notes
                    .iter()
                    .filter(|n| Some(&n.1) == text(0).as_ref())
                    .count();
                Ok(json!({"columns": ["count"], "rows": [[count]]}))
            } else if sql.starts_with("SELECT id, text, created_at") {
                let rows: Vec<Value> = table
                    .notes
                    .iter()
                    .filter(|n| Some(&n.1) == text(0).as_ref())
                    .map(|n| json!([n.0, n.2, 1_700_000_000]))
                    .collect();
                Ok(json!({"columns": ["id", "text", "created_at"], "rows": rows}))
            } else {
                Err(Error::msg(format!("the fake does not know {sql}")))
            }
        }
    }

    fn host() -> (TestHost, Arc<Mutex<FakeTable>>) {
        let table = Arc::new(Mutex::new(FakeTable::default()));
        let host =
            TestHost::new("notes").with_service("database", fake_database(Arc::clone(&table)));
        (host, table)
    }

    /// A message from `sender`, its id its text (a message of another
    /// text is another message).
    fn from(sender: &str, text: &'static str) -> Message<'static> {
        Message::new(text).with_sender(sender).with_id(text)
    }

    fn recall_texts(loaded: &LoadedPlugin<'_>, sender: &str) -> Vec<String> {
        let notes = loaded
            .call_service("notes", "recall", json!({"sender": sender}))
            .unwrap();
        let notes: Vec<Note> = serde_json::from_value(notes).unwrap();
        notes.into_iter().map(|n| n.text).collect()
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
        assert_eq!(manifest.dependencies, ["database@^1"]);
        assert_eq!(
            manifest.permissions,
            ["event:emit:notes:*", "service:database"]
        );
    }

    #[test]
    fn the_table_is_created_with_the_dialects_ddl_when_the_service_starts() {
        let (host, table) = host();
        let _loaded = host.load(plugin()).unwrap();
        let statements = table.lock().unwrap().statements.clone();
        assert_eq!(statements, SQLITE_SCHEMA);
        assert!(POSTGRES_SCHEMA[0].contains("BIGSERIAL"));
        assert!(recall_sql(Dialect::Postgres, true).contains("ILIKE $2"));
        assert!(recall_sql(Dialect::Sqlite, false).contains("LIKE $2"));
    }

    #[test]
    fn a_message_handled_twice_stores_one_note() {
        let (host, table) = host();
        let loaded = host.load(plugin()).unwrap();
        let message = Message::new("remember buy milk")
            .with_sender("alice")
            .with_id("m-1");
        let first = loaded.handle_message("REMEMBER", &message).unwrap();
        assert_eq!(first.text, "Noted: buy milk");
        let again = loaded.handle_message("REMEMBER", &message).unwrap();
        assert_eq!(again.text, "Noted: buy milk");
        assert_eq!(again.data["id"], first.data["id"]);
        assert_eq!(table.lock().unwrap().notes.len(), 1);
        assert_eq!(host.emitted().len(), 1, "one note, one event");
        assert_eq!(
            host.emitted()[0].payload,
            json!({"sender": "alice", "id": first.data["id"]})
        );
        // Without a message id, each call stores a note.
        loaded
            .call_service("notes", "remember", json!({"sender": "alice", "text": "x"}))
            .unwrap();
        let answer = loaded
            .call_service("notes", "remember", json!({"sender": "alice", "text": "x"}))
            .unwrap();
        assert_eq!(answer, json!({"id": 3, "stored": true}));
        assert_eq!(recall_texts(&loaded, "alice"), ["buy milk", "x", "x"]);
    }

    #[test]
    fn like_patterns_are_escaped() {
        assert_eq!(escape_like("a%b_c\\d"), "a\\%b\\_c\\\\d");
    }

    #[test]
    fn the_service_checks_its_arguments() {
        let (host, _table) = host();
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
        let (host, _table) = host();
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
            .handle_message("REMEMBER", &from("alice", "Note that the café opens at 8"))
            .unwrap();
        assert_eq!(result.text, "Noted: the café opens at 8");
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
        assert_eq!(host.emitted().len(), 1);
    }

    #[test]
    fn recall_action_and_provider() {
        let (host, _table) = host();
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
        for text in ["remember buy milk", "remember call Bob"] {
            loaded
                .handle_message("REMEMBER", &from("alice", text))
                .unwrap();
        }
        let result = recall("alice", "recall");
        assert_eq!(result.text, "Your notes:\n1. buy milk\n2. call Bob");
        assert_eq!(result.data["notes"][1]["text"], "call Bob");
        assert_eq!(recall("bob", "recall").text, NO_NOTES_TEXT);
        assert_eq!(
            loaded.handle("RECALL", "recall").unwrap().text,
            NO_SENDER_TEXT
        );

        let provider = &loaded.plugin().providers()[0];
        let count = |message: &Message<'_>| provider.fetch(message, &host.runtime()).unwrap();
        assert_eq!(count(&from("alice", "hi")), json!({"count": 2}));
        assert_eq!(count(&from("bob", "hi")), json!({"count": 0}));
        assert_eq!(count(&Message::new("hi")), json!({"count": 0}));
    }

    #[test]
    fn describe_notes_marks_a_cut_list() {
        let notes: Vec<Note> = (1..=2)
            .map(|id| Note {
                id,
                text: format!("note {id}"),
                created_at: 0,
            })
            .collect();
        assert_eq!(
            describe_notes(&notes, None, true),
            "Your latest 2 notes:\n1. note 1\n2. note 2"
        );
        assert_eq!(
            describe_notes(&[], Some("%"), false),
            "You have no notes containing \"%\"."
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
    fn a_stopped_service_or_a_missing_database_is_an_error() {
        let (host, _table) = host();
        let loaded = host.load(plugin()).unwrap();
        let service = loaded.plugin().service_named("notes").unwrap();
        service.stop(&host.runtime()).unwrap();
        let error = loaded
            .call_service("notes", "count", json!({"sender": "alice"}))
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Unavailable);

        let error = TestHost::new("notes").load(plugin()).err().unwrap();
        assert_eq!(error.kind(), ErrorKind::NotFound, "{error:?}");
    }
}
