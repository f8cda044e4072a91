//! Which user a worker runs as: `[isolation] worker_user`, resolved once in
//! the host (the worker, sandboxed, could not read the user database).
//!
//! A worker started by an agent that runs as root drops to an unprivileged
//! user before it opens its plugin: `nobody` unless the operator names
//! another. An agent that is not root cannot switch users, so its workers
//! keep its user (each in a user namespace of its own, with no
//! capabilities), and naming a `worker_user` is then an error rather than a
//! promise the kernel would not keep.

use crate::config::isolation::{IsolationSettings, DEFAULT_WORKER_USER};
use crate::isolation::wire::policy::WorkerIdentity;
use std::fmt;

/// `worker_user` cannot be honoured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IdentityError {
    user: String,
    cause: IdentityErrorCause,
}

/// Why `worker_user` cannot be honoured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IdentityErrorCause {
    /// The user database has no such user.
    Unknown,
    /// The agent is not root, so it cannot start workers as another user.
    NotRoot {
        /// The agent's own user id.
        uid: u32,
    },
    /// The user database could not be read.
    Lookup(String),
}

impl fmt::Display for IdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[isolation] worker_user = '{}': ", self.user)?;
        match &self.cause {
            IdentityErrorCause::Unknown => f.write_str("no such user on this system"),
            IdentityErrorCause::NotRoot { uid } => write!(
                f,
                "the agent runs as user id {uid}, not root, and cannot start its workers as \
                 another user (they run as the agent's user, without capabilities); remove \
                 the key"
            ),
            IdentityErrorCause::Lookup(why) => write!(f, "cannot read the user database: {why}"),
        }
    }
}

impl std::error::Error for IdentityError {}

/// The user the workers of this agent switch to, if they switch: `None` for
/// an agent that is not root (its workers keep its user), and everywhere
/// but Unix.
pub(crate) fn worker_identity(
    settings: &IsolationSettings,
) -> Result<Option<WorkerIdentity>, IdentityError> {
    #[cfg(unix)]
    {
        let uid = rustix::process::geteuid().as_raw();
        let named = settings.worker_user.as_deref();
        if uid != 0 {
            return match named {
                None => Ok(None),
                Some(user) => Err(IdentityError {
                    user: user.to_owned(),
                    cause: IdentityErrorCause::NotRoot { uid },
                }),
            };
        }
        let user = named.unwrap_or(DEFAULT_WORKER_USER);
        lookup(user).map(Some)
    }
    #[cfg(not(unix))]
    {
        let _ = (settings, DEFAULT_WORKER_USER);
        Ok(None)
    }
}

/// The ids of `user`, a name or a numeric user id (a number the user
/// database does not know keeps it as its group id too).
#[cfg(unix)]
fn lookup(user: &str) -> Result<WorkerIdentity, IdentityError> {
    let error = |cause| IdentityError {
        user: user.to_owned(),
        cause,
    };
    let numeric = user.parse::<u32>().ok();
    let entry = match numeric {
        Some(uid) => passwd_entry(Key::Id(uid)),
        None => passwd_entry(Key::Name(user)),
    }
    .map_err(|e| error(IdentityErrorCause::Lookup(e.to_string())))?;
    match (entry, numeric) {
        (Some((uid, gid)), _) => Ok(WorkerIdentity {
            user: user.to_owned(),
            uid,
            gid,
        }),
        (None, Some(uid)) => Ok(WorkerIdentity {
            user: user.to_owned(),
            uid,
            gid: uid,
        }),
        (None, None) => Err(error(IdentityErrorCause::Unknown)),
    }
}

#[cfg(unix)]
enum Key<'a> {
    Name(&'a str),
    Id(u32),
}

/// The user id and group id of a user database entry, if there is one.
#[cfg(unix)]
fn passwd_entry(key: Key<'_>) -> std::io::Result<Option<(u32, u32)>> {
    use std::ffi::CString;
    let name = match key {
        Key::Name(name) => Some(CString::new(name).map_err(std::io::Error::other)?),
        Key::Id(_) => None,
    };
    let mut buffer = vec![0 as libc::c_char; 4096];
    loop {
        // SAFETY: an all-zero `passwd` is a valid value (null pointers and
        // zero ids); the call fills it in.
        let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call: `name` is a C string,
        // `entry` and `found` are locals, and `buffer` is writable for its
        // whole length, which is passed with it. The strings the entry
        // points to live in `buffer`, which is not read here.
        let status = unsafe {
            match (&name, &key) {
                (Some(name), _) => libc::getpwnam_r(
                    name.as_ptr(),
                    &mut entry,
                    buffer.as_mut_ptr(),
                    buffer.len(),
                    &mut found,
                ),
                (None, Key::Id(uid)) => libc::getpwuid_r(
                    *uid,
                    &mut entry,
                    buffer.as_mut_ptr(),
                    buffer.len(),
                    &mut found,
                ),
                (None, Key::Name(_)) => return Ok(None),
            }
        };
        if status == libc::ERANGE && buffer.len() < 1 << 20 {
            buffer.resize(buffer.len() * 2, 0);
            continue;
        }
        if status != 0 {
            return Err(std::io::Error::from_raw_os_error(status));
        }
        return Ok((!found.is_null()).then_some((entry.pw_uid, entry.pw_gid)));
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn settings(user: Option<&str>) -> IsolationSettings {
        IsolationSettings {
            worker_user: user.map(str::to_owned),
            ..IsolationSettings::default()
        }
    }

    #[test]
    fn names_and_numbers_resolve_through_the_user_database() {
        let root = lookup("root").expect("root exists");
        assert_eq!((root.uid, root.gid), (0, 0));
        let by_id = lookup("0").expect("uid 0 exists");
        assert_eq!(by_id.uid, 0);
        let unlisted = lookup("4000000").expect("a number needs no entry");
        assert_eq!((unlisted.uid, unlisted.gid), (4_000_000, 4_000_000));
        let error = lookup("no-such-user-here").unwrap_err();
        assert_eq!(error.cause, IdentityErrorCause::Unknown);
        assert!(error.to_string().contains("'no-such-user-here'"), "{error}");
    }

    #[test]
    fn a_root_agent_switches_to_nobody_unless_told_otherwise() {
        if !rustix::process::geteuid().is_root() {
            let error = worker_identity(&settings(Some("nobody"))).unwrap_err();
            assert!(matches!(error.cause, IdentityErrorCause::NotRoot { .. }));
            assert_eq!(worker_identity(&settings(None)), Ok(None));
            return;
        }
        match worker_identity(&settings(None)) {
            Ok(Some(identity)) => assert_eq!(identity.user, "nobody"),
            other => eprintln!("skipped: this system has no user 'nobody' ({other:?})"),
        }
        let root = worker_identity(&settings(Some("root"))).expect("root");
        assert_eq!(root.map(|r| r.uid), Some(0));
    }
}
