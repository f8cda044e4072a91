//! What becomes of a panic in a plugin library.
//!
//! Inside a call from the host, [`guard`] catches it and the host gets an
//! [`ErrorKind::Panicked`] error naming where it happened: the hook only
//! records the location. A panic in a thread the plugin started itself is
//! caught by nobody, and the library's own copy of std would print it to a
//! stderr nobody reads; the hook sends it to the host log instead, as an
//! error line of the plugin (of each plugin of the library, when it holds
//! several, since a thread belongs to no plugin in particular).

use crate::error::{Error, ErrorKind, Result};
use crate::runtime::{Level, Shared};
use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, Once, PoisonError, Weak};

thread_local! {
    static LAST_PANIC_LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
    /// How many [`guard`]s this thread is inside.
    static GUARDS: Cell<u32> = const { Cell::new(0) };
}

/// The live plugin instances of this library, for reporting the panics of
/// threads that no call guards.
static LIVE: Mutex<Vec<Weak<Shared>>> = Mutex::new(Vec::new());

/// Counts `shared`'s instance among the live ones of this library.
pub(crate) fn register(shared: &Arc<Shared>) {
    let mut live = LIVE.lock().unwrap_or_else(PoisonError::into_inner);
    live.retain(|instance| instance.strong_count() > 0);
    live.push(Arc::downgrade(shared));
}

/// Replaces this library's panic hook (each plugin library has its own copy
/// of std, so this never touches the host's hook) with one that records where
/// a guarded panic happened instead of printing it, and sends an unguarded
/// one to the host log.
pub(crate) fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let location = location_of(info);
            if GUARDS.with(Cell::get) > 0 {
                LAST_PANIC_LOCATION.with(|slot| *slot.borrow_mut() = location);
            } else {
                report_unguarded(payload_text(info.payload()), location.as_deref());
            }
        }));
    });
}

/// For a process that runs plugin code linked in rather than loaded (a
/// test with [`crate::testing::TestHost`]): records where a guarded panic
/// happened, as a library's hook does, so that its error reads as in the
/// host, and leaves every other panic to the hook installed before.
pub(crate) fn install_linked_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if GUARDS.with(Cell::get) > 0 {
                LAST_PANIC_LOCATION.with(|slot| *slot.borrow_mut() = location_of(info));
            } else {
                previous(info);
            }
        }));
    });
}

/// `file:line:column` of a panic, when known.
fn location_of(info: &std::panic::PanicHookInfo<'_>) -> Option<String> {
    info.location()
        .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
}

/// Logs a panic outside any call through the first live instance.
fn report_unguarded(text: Option<&str>, location: Option<&str>) {
    let thread = std::thread::current();
    let line = format!(
        "a thread the plugin started ('{}') panicked{}: {}; the thread is gone, nothing caught it",
        thread.name().unwrap_or("unnamed"),
        location.map(|l| format!(" at {l}")).unwrap_or_default(),
        text.unwrap_or("a non-text panic payload"),
    );
    // `try_lock`: the panic may have happened while this thread held it.
    let live: Vec<Arc<Shared>> = match LIVE.try_lock() {
        Ok(live) => live.iter().filter_map(Weak::upgrade).collect(),
        Err(_) => Vec::new(),
    };
    if live.is_empty() {
        eprintln!("agent-host plugin: {line}");
    }
    for instance in live {
        instance.host.log(Level::Error, &line);
    }
}

/// The text of a panic payload (`panic!` makes a `&str` or a `String`).
fn payload_text(payload: &(dyn std::any::Any + Send)) -> Option<&str> {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
}

/// The message of a caught panic, with its location when the hook saw it.
pub(crate) fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    let text = payload_text(&*payload).unwrap_or("a non-text panic payload");
    match LAST_PANIC_LOCATION.with(|slot| slot.borrow_mut().take()) {
        Some(location) => format!("panicked at {location}: {text}"),
        None => format!("panicked: {text}"),
    }
}

/// Leaves a guard when dropped, even on unwinding.
struct Guarded;

impl Guarded {
    fn enter() -> Self {
        GUARDS.with(|guards| guards.set(guards.get() + 1));
        Guarded
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        GUARDS.with(|guards| guards.set(guards.get().saturating_sub(1)));
    }
}

/// Runs plugin code, turning a panic into an [`ErrorKind::Panicked`] error.
pub(crate) fn guard<T>(body: impl FnOnce() -> Result<T>) -> Result<T> {
    catch(body).and_then(|result| result)
}

/// Runs plugin code that cannot fail but may panic, turning a panic into an
/// [`ErrorKind::Panicked`] error.
#[inline]
pub(crate) fn catch<T>(body: impl FnOnce() -> T) -> Result<T> {
    let guarded = Guarded::enter();
    let outcome = catch_unwind(AssertUnwindSafe(body));
    drop(guarded);
    outcome.map_err(|payload| Error::new(ErrorKind::Panicked, panic_message(payload)))
}
