//! The error type plugin code returns, and how it maps onto the wire codes.

use agent_host_plugin_abi::{codes, FfiError};
use std::fmt;

/// What kind of failure an [`Error`] is. The host treats each kind differently
/// (a permission denial is counted, a panic may quarantine the plugin).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// An ordinary failure of the plugin's own logic.
    Failed,
    /// Plugin code panicked; the SDK caught it at the boundary.
    Panicked,
    /// A permission check refused the call.
    PermissionDenied,
    /// A named thing does not exist (service, method, component, config key).
    NotFound,
    /// Input could not be understood (malformed JSON, wrong arguments).
    InvalidInput,
    /// The call was cancelled or ran past its deadline.
    Cancelled,
    /// The target exists but cannot serve now (for example a stopped service).
    Unavailable,
}

impl ErrorKind {
    /// The wire code for this kind.
    pub fn code(self) -> u32 {
        match self {
            ErrorKind::Failed => codes::FAILED,
            ErrorKind::Panicked => codes::PANICKED,
            ErrorKind::PermissionDenied => codes::PERMISSION_DENIED,
            ErrorKind::NotFound => codes::NOT_FOUND,
            ErrorKind::InvalidInput => codes::INVALID_INPUT,
            ErrorKind::Cancelled => codes::CANCELLED,
            ErrorKind::Unavailable => codes::UNAVAILABLE,
        }
    }

    /// The kind for a wire code; unknown codes are [`ErrorKind::Failed`].
    pub fn from_code(code: u32) -> Self {
        match code {
            codes::PANICKED => ErrorKind::Panicked,
            codes::PERMISSION_DENIED => ErrorKind::PermissionDenied,
            codes::NOT_FOUND => ErrorKind::NotFound,
            codes::INVALID_INPUT => ErrorKind::InvalidInput,
            codes::CANCELLED => ErrorKind::Cancelled,
            codes::UNAVAILABLE => ErrorKind::Unavailable,
            _ => ErrorKind::Failed,
        }
    }

    /// A short lowercase name, as used in logs and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Failed => "failed",
            ErrorKind::Panicked => "panicked",
            ErrorKind::PermissionDenied => "permission_denied",
            ErrorKind::NotFound => "not_found",
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Unavailable => "unavailable",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error from plugin code or from a host callback.
///
/// Like `anyhow::Error`, any `std::error::Error` converts into it with `?`
/// (as [`ErrorKind::Failed`]); for that reason it does not implement
/// `std::error::Error` itself. The host reports it as one line naming the
/// plugin and the entry point.
///
/// ```
/// use agent_host_plugin_sdk::{bail, Error, ErrorKind, Result};
///
/// fn parse_port(text: &str) -> Result<u16> {
///     let port: u16 = text.parse()?; // ParseIntError -> Error (Failed)
///     if port == 0 {
///         bail!("port must not be 0");
///     }
///     Ok(port)
/// }
/// assert_eq!(parse_port("8080").unwrap(), 8080);
/// assert_eq!(parse_port("0").unwrap_err().message(), "port must not be 0");
///
/// let error = Error::new(ErrorKind::InvalidInput, "bad units").context("config");
/// assert_eq!(error.to_string(), "config: bad units");
/// assert_eq!(error.kind(), ErrorKind::InvalidInput);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

impl Error {
    /// An ordinary failure with a message.
    pub fn msg(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Failed, message)
    }

    /// An error of the given kind.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// The error's kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The error's message, without the kind.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Prefixes the message with context, keeping the kind.
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }

    pub(crate) fn into_ffi(self) -> FfiError {
        FfiError::new(self.kind.code(), self.message)
    }

    pub(crate) fn from_ffi(error: FfiError) -> Self {
        Self::new(
            ErrorKind::from_code(error.code),
            error.message.into_string(),
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Error({}: {})", self.kind, self.message)
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for Error {
    fn from(error: E) -> Self {
        Self::msg(error.to_string())
    }
}

/// The result type of plugin code.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Returns early with an [`Error`] built from a format string.
#[macro_export]
macro_rules! bail {
    ($($arg:tt)*) => {
        return ::core::result::Result::Err($crate::Error::msg(::std::format!($($arg)*)))
    };
}
