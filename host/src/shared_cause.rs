//! A cause kept by an error value that is cloned and compared: a load
//! report, a reload failure or a refusal is kept, handed to several
//! readers and compared in tests, while the operating system's or a
//! parser's error it wraps is neither `Clone` nor `PartialEq`.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

/// The error `E`, shared: cloning it shares the one value. It prints as
/// `E` does and is the error's `source()`; two are equal when they print
/// the same (what comparing two whole reports needs; nothing in the host
/// branches on it).
pub struct SharedCause<E>(Arc<E>);

impl<E> SharedCause<E> {
    /// The error it holds.
    pub fn get(&self) -> &E {
        &self.0
    }
}

impl<E> From<E> for SharedCause<E> {
    fn from(error: E) -> Self {
        Self(Arc::new(error))
    }
}

impl<E> Clone for SharedCause<E> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<E: fmt::Debug> fmt::Debug for SharedCause<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<E: fmt::Display> fmt::Display for SharedCause<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<E: Error> Error for SharedCause<E> {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.0.source()
    }
}

impl<E: fmt::Display> PartialEq for SharedCause<E> {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.to_string() == other.0.to_string()
    }
}

impl<E: fmt::Display> Eq for SharedCause<E> {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    #[test]
    fn a_shared_cause_prints_and_compares_as_its_error() {
        let cause = SharedCause::from(io::Error::new(io::ErrorKind::NotFound, "gone"));
        let copy = cause.clone();
        assert_eq!(cause, copy);
        assert_eq!(copy.to_string(), "gone");
        assert_eq!(copy.get().kind(), io::ErrorKind::NotFound);
        let other = SharedCause::from(io::Error::new(io::ErrorKind::NotFound, "moved"));
        assert_ne!(cause, other);
    }
}
