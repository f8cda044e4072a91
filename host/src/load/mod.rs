//! Opening plugin files: find the library files in a folder, copy each to a
//! private place, check it (size, trust, ABI and layout) and read its
//! manifests, without running any hook. What happens to the plugins once a
//! file is open is the lifecycle's (`crate::lifecycle`).
//!
//! * `discovery`: which files of a folder are plugin libraries;
//! * `private_copy`: the private folder and the read-only copies loaded;
//! * `image`: reading a library's image before it is mapped;
//! * `library`: `dlopen` of a private copy, the ABI checks, the manifests;
//! * `report`: what a load reports, file by file and plugin by plugin;
//! * `error`: why a file or a plugin failed to load.

pub(crate) mod discovery;
mod error;
mod image;
pub(crate) mod library;
pub(crate) mod private_copy;
pub(crate) mod report;

pub use error::{LoadError, OpenError};
