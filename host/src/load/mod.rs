//! Opening plugin files: find the library files in a folder, copy each to a
//! private place, check it (size, trust, ABI and layout) and read its
//! manifests, without running any hook. What happens to the plugins once a
//! file is open is the lifecycle's (`crate::lifecycle`).
//!
//! * `discovery`: which files of a folder are plugin libraries;
//! * `private_copy`: the private folder and the read-only copies loaded;
//! * `image`: reading a library's image before it is mapped;
//! * `library`: `dlopen` of a private copy, the ABI checks, the manifests;
//! * `dispatch`: a described call run on a loaded plugin through the FFI,
//!   and `ffi_host`, the host's callbacks as the FFI carries them;
//! * `error`: why a file could not be opened.

pub(crate) mod discovery;
pub(crate) mod dispatch;
mod error;
mod ffi_host;
mod image;
pub(crate) mod library;
pub(crate) mod private_copy;

pub use error::OpenError;
