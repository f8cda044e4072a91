//! The call into a plugin that this thread is in, if any: its cancellation
//! signal and deadline. A service call that plugin code makes from inside a
//! call inherits what is left of its caller's deadline, so a chain of
//! service calls can never outlive the message that started it.
//!
//! Set by whoever calls into a plugin on this thread, for the length of
//! the call; nested calls stack (each restores the one before). Likewise
//! the emitter of the event whose handler this thread runs, which the
//! plugin may ask for.

use agent_host_plugin_abi::CallControl;
use std::cell::{Cell, RefCell};

thread_local! {
    static CURRENT: Cell<*const CallControl> = const { Cell::new(std::ptr::null()) };
}

/// Runs `call` as the current call of this thread, under `control`.
#[inline]
pub(crate) fn within<T>(control: &CallControl, call: impl FnOnce() -> T) -> T {
    struct Restore(*const CallControl);
    impl Drop for Restore {
        fn drop(&mut self) {
            CURRENT.with(|current| current.set(self.0));
        }
    }
    let _restore = Restore(CURRENT.with(|current| current.replace(control)));
    call()
}

/// The current call's deadline (milliseconds since the Unix epoch, 0 for
/// none) and whether it was cancelled; `None` outside any call.
pub(crate) fn inherited() -> Option<(u64, bool)> {
    CURRENT.with(|current| {
        let control = current.get();
        // SAFETY: the pointer is set only by `within`, which borrows the
        // control for the whole time it is set and restores the previous
        // pointer before returning, so a non-null pointer here refers to a
        // control that is alive on this thread's stack or in a relay the
        // caller holds.
        unsafe { control.as_ref() }.map(|c| (c.deadline_unix_ms(), c.is_cancelled()))
    })
}

thread_local! {
    static SOURCE: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Runs `handle` (a plugin's event handler) with `source` as the emitter of
/// the event it handles, which the plugin may ask for.
pub(crate) fn delivering<T>(source: &str, handle: impl FnOnce() -> T) -> T {
    let previous = SOURCE.with(|s| s.replace(Some(source.to_string())));
    let result = handle();
    SOURCE.with(|s| *s.borrow_mut() = previous);
    result
}

/// Who emitted the event whose handler this thread runs.
pub(crate) fn current_source() -> Option<String> {
    SOURCE.with(|s| s.borrow().clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_calls_see_the_innermost_and_restore_the_outer() {
        assert_eq!(inherited(), None);
        let outer = CallControl::with_deadline(100);
        let inner = CallControl::with_deadline(50);
        within(&outer, || {
            assert_eq!(inherited(), Some((100, false)));
            within(&inner, || {
                inner.cancel();
                assert_eq!(inherited(), Some((50, true)));
            });
            assert_eq!(inherited(), Some((100, false)));
        });
        assert_eq!(inherited(), None);
    }
}
