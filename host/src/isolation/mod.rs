//! Running a plugin in a sandboxed worker process.
pub(crate) mod policy;
pub(crate) mod sandbox;
