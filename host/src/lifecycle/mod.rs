//! A generation entering and leaving service, written once.
//!
//! Every way a plugin comes and goes (a folder loaded at start, a file
//! found by a rescan, a lazy plugin started when first needed, a reload, a
//! file removed, the host shutting down) is a sequence of the same named
//! steps, each in one function of this module:
//!
//! | step | function | what it does |
//! |---|---|---|
//! | open | [`check::open_source`] | a fresh private copy of the file, its ABI checked, in the host or through a probe worker |
//! | check | [`check::check_manifest`] | the manifest validated, the action triggers compiled |
//! | resolve | `load.rs` | duplicates refused, dependencies resolved into levels |
//! | create | [`generation::create`] | config validated, permissions granted, the instance made (no hook run) |
//! | enter | [`generation::enter_service`] | registered, `on_load`, services registered and started, providers subscribed |
//! | leave | [`generation::leave_service`] | providers unsubscribed, services stopped, `on_unload`, subscriptions and timers dropped |
//!
//! Each call into the plugin runs as a [`Step`](crate::registry::step::Step)
//! within the lifecycle deadline (`registry/step.rs`). The flows:
//!
//! * `load.rs`: open, check, resolve, then level by level `enter` (or, for
//!   a lazy plugin, a starter that runs `enter` when first needed);
//! * `remove.rs`: the plugins of a removed file and their dependents
//!   `leave`, after the calls in flight drain;
//! * `shutdown.rs`: every plugin `leave`s, in reverse load order;
//! * `crate::reload`: open, check, create; then, with the admission gate
//!   closed, the old generation's state and services handed to the new one,
//!   which enters in its place while the old one leaves.
//!
//! Failure at any step undoes what the plugin set up and names the file,
//! the plugin and the cause; it never touches another plugin.

pub(crate) mod check;
mod error;
pub(crate) mod generation;
mod load;
mod parallel;
mod remove;
pub(crate) mod report;
mod shutdown;
#[cfg(test)]
mod tests;

pub(crate) use check::open_source;
pub use check::ManifestCheckError;
pub use error::LoadError;
#[cfg(test)]
pub(crate) use load::load_sources;
pub(crate) use load::{load_dir, rescan};
pub(crate) use remove::remove_file;
pub(crate) use shutdown::stop_all;
