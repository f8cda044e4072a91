//! Which plugin files become plugins: those pinned by the lock file, and
//! those signed by a trusted key, as the operator's `[trust]` table asks.
//!
//! The check runs on the bytes the loader read once into memory to make
//! its private copy of a file (`load/library.rs::private_copy`), before it
//! writes them to the copy and before anything maps it, so a file swapped
//! between the check and `dlopen` cannot slip through: the bytes checked are
//! the bytes written, read-only, in a folder only this process's user can
//! open, and loaded. Every load goes through it: the start, a rescan, a
//! reload from the watcher, the CLI or HTTP, and the probe of a file whose
//! plugins may be isolated. A refusal is one log line (`event =
//! "file_refused"`, with `file`, `sha256` and `reason`) and a count in
//! `agent_host_files_refused_total{reason}`; it fails that file only, and
//! no copy of it is left on disk.
//!
//! `lock.rs` reads and writes the lock file, `signature.rs` verifies and
//! makes minisign signatures, `digest.rs` is the SHA-256, `settings.rs` the
//! `[trust]` table. The lock and the keys are read once, when the host
//! starts: writing the lock file later changes nothing until a restart.
//! Signatures, lock and key files must be regular files and are read with
//! a cap (`crate::regular_file`): a FIFO or a device in their place is
//! refused at once, naming the file, never waited on nor read to its end.

pub mod digest;
pub mod lock;
pub mod settings;
pub mod signature;

use crate::metrics::RefusalLabels;
use lock::{LockFile, LockMismatch};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use signature::{SignatureProblem, TrustedKeys};
use std::path::{Path, PathBuf};

pub use settings::TrustSettings;

/// Why a file was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefusalReason {
    /// No pinned file has its SHA-256.
    NotInLock {
        /// The lock file.
        lock: PathBuf,
    },
    /// A file of its name is pinned with another SHA-256.
    HashDiffers {
        /// The lock file.
        lock: PathBuf,
        /// The pinned SHA-256.
        locked: String,
    },
    /// Its signature is missing, unreadable, by an untrusted key or bad.
    Signature(SignatureProblem),
}

impl RefusalReason {
    /// A stable label for logs and metrics: `not_in_lock`, `hash_differs`,
    /// `unsigned`, `unreadable_signature`, `untrusted_key`, `bad_signature`.
    pub fn label(&self) -> &'static str {
        match self {
            RefusalReason::NotInLock { .. } => "not_in_lock",
            RefusalReason::HashDiffers { .. } => "hash_differs",
            RefusalReason::Signature(SignatureProblem::Missing { .. }) => "unsigned",
            RefusalReason::Signature(
                SignatureProblem::Unreadable { .. } | SignatureProblem::Malformed { .. },
            ) => "unreadable_signature",
            RefusalReason::Signature(SignatureProblem::UntrustedKey { .. }) => "untrusted_key",
            RefusalReason::Signature(SignatureProblem::Invalid { .. }) => "bad_signature",
        }
    }
}

impl std::fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RefusalReason::NotInLock { lock } => write!(
                f,
                "not in the lock file {} (pin it with `agent-host lock`)",
                lock.display()
            ),
            RefusalReason::HashDiffers { lock, locked } => write!(
                f,
                "hash differs from the one locked for this file name in {} ({locked}); \
                 re-pin it with `agent-host lock DIR --update NAME` if the change is yours",
                lock.display()
            ),
            RefusalReason::Signature(problem) => problem.fmt(f),
        }
    }
}

/// A file the trust policy refused: its hash and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The SHA-256 of the bytes that would have been loaded.
    pub sha256: String,
    /// Why it was refused.
    pub reason: RefusalReason,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "refused (sha256 {}): {}", self.sha256, self.reason)
    }
}

impl std::error::Error for Refusal {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.reason)
    }
}

impl std::error::Error for RefusalReason {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RefusalReason::Signature(problem) => Some(problem),
            _ => None,
        }
    }
}

/// A lock file or trusted key that cannot be read: the host does not start.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The lock file cannot be read or is not a lock file.
    #[error("[trust]: {0}")]
    Lock(#[from] lock::LockFileError),
    /// A key of `public_keys` is not a public key.
    #[error("[trust]: public_keys[{index}]: {cause}")]
    PublicKey {
        /// Its place in the list.
        index: usize,
        /// Why.
        #[source]
        cause: signature::KeyError,
    },
    /// A file of `public_key_files` cannot be read.
    #[error("[trust]: public key file {}: {cause}", file.display())]
    ReadPublicKeyFile {
        /// The file.
        file: PathBuf,
        /// The operating system's error.
        #[source]
        cause: std::io::Error,
    },
    /// A file of `public_key_files` holds no public key.
    #[error("[trust]: public key file {}: {cause}", file.display())]
    PublicKeyFile {
        /// The file.
        file: PathBuf,
        /// Why.
        #[source]
        cause: signature::KeyError,
    },
}

/// What the host checks of every plugin file before it maps it.
#[derive(Debug, Clone, Default)]
pub struct TrustPolicy {
    lock: Option<(PathBuf, LockFile)>,
    keys: TrustedKeys,
    refused: Option<Family<RefusalLabels, Counter>>,
}

impl TrustPolicy {
    /// A policy that admits every file (no `[trust]` table).
    pub fn open() -> Self {
        Self::default()
    }

    /// Reads the lock file and the keys the settings name.
    pub fn load(settings: &TrustSettings) -> Result<Self, TrustError> {
        let lock = match &settings.lock {
            Some(path) => Some((path.clone(), LockFile::read(path)?)),
            None => None,
        };
        let mut keys = Vec::new();
        for (i, text) in settings.public_keys.iter().enumerate() {
            keys.push(
                signature::parse_public_key(text)
                    .map_err(|cause| TrustError::PublicKey { index: i, cause })?,
            );
        }
        for path in &settings.public_key_files {
            let text = crate::regular_file::read_to_string(path, signature::MAX_SIGNATURE_BYTES)
                .map_err(|cause| TrustError::ReadPublicKeyFile {
                    file: path.clone(),
                    cause,
                })?;
            keys.push(signature::parse_public_key(&text).map_err(|cause| {
                TrustError::PublicKeyFile {
                    file: path.clone(),
                    cause,
                }
            })?);
        }
        Ok(Self {
            lock,
            keys: TrustedKeys::new(keys),
            refused: None,
        })
    }

    /// The same policy, counting its refusals in `refused`.
    pub(crate) fn counting(mut self, refused: Family<RefusalLabels, Counter>) -> Self {
        self.refused = Some(refused);
        self
    }

    /// Whether any check is made.
    pub fn is_enforcing(&self) -> bool {
        self.lock.is_some() || !self.keys.is_empty()
    }

    /// A line for the start's log: what is checked.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some((path, lock)) = &self.lock {
            parts.push(format!(
                "pinned by {} ({} files)",
                path.display(),
                lock.files.len()
            ));
        }
        if !self.keys.is_empty() {
            parts.push("signed by a trusted key".to_string());
        }
        if parts.is_empty() {
            "any file".to_string()
        } else {
            parts.join(" and ")
        }
    }

    /// The plugins the lock file says a file with this SHA-256 exports
    /// (its pin's list), when a lock is in force and pins such a file:
    /// what a file holds, known without running any of its code.
    pub(crate) fn pinned_plugins(&self, sha256: &str) -> Option<Vec<String>> {
        let (_, lock) = self.lock.as_ref()?;
        let pinned = lock.files.iter().find(|entry| entry.sha256 == sha256)?;
        Some(pinned.plugins.iter().map(|p| p.name.clone()).collect())
    }

    /// Checks `bytes`, the contents of `file` about to be written to its
    /// private copy and loaded.
    /// Returns their SHA-256, or the refusal, which is logged and counted.
    pub(crate) fn admit(&self, file: &Path, bytes: &[u8]) -> Result<String, Refusal> {
        let sha256 = digest::sha256_hex(bytes);
        let reason = self.reason_to_refuse(file, &sha256, bytes);
        match reason {
            None => Ok(sha256),
            Some(reason) => {
                let refusal = Refusal { sha256, reason };
                self.report(file, &refusal);
                Err(refusal)
            }
        }
    }

    fn reason_to_refuse(&self, file: &Path, sha256: &str, bytes: &[u8]) -> Option<RefusalReason> {
        if let Some((path, lock)) = &self.lock {
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            match lock.check(&name, sha256) {
                Ok(()) => {}
                Err(LockMismatch::NotInLock) => {
                    return Some(RefusalReason::NotInLock { lock: path.clone() })
                }
                Err(LockMismatch::HashDiffers { locked }) => {
                    return Some(RefusalReason::HashDiffers {
                        lock: path.clone(),
                        locked,
                    })
                }
            }
        }
        if !self.keys.is_empty() {
            if let Err(problem) = self.keys.verify_file(file, bytes) {
                return Some(RefusalReason::Signature(problem));
            }
        }
        None
    }

    fn report(&self, file: &Path, refusal: &Refusal) {
        tracing::warn!(
            event = "file_refused",
            file = %file.display(),
            sha256 = %refusal.sha256,
            reason = refusal.reason.label(),
            "{}: {refusal}",
            file.display()
        );
        if let Some(refused) = &self.refused {
            refused
                .get_or_create(&RefusalLabels {
                    reason: refusal.reason.label().to_string(),
                })
                .inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::lock::{LockedFile, LockedPlugin};
    use super::*;

    fn lock_with(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let mut lock = LockFile::new();
        lock.pin(LockedFile {
            name: name.into(),
            sha256: digest::sha256_hex(bytes),
            plugins: vec![LockedPlugin {
                name: "p".into(),
                version: "1.0.0".into(),
            }],
        });
        let path = dir.join(lock::DEFAULT_LOCK_NAME);
        lock.write(&path).expect("write");
        path
    }

    #[test]
    fn the_open_policy_admits_anything_and_returns_the_hash() {
        let policy = TrustPolicy::open();
        assert!(!policy.is_enforcing());
        assert_eq!(
            policy.admit(Path::new("x.so"), b"abc"),
            Ok(digest::sha256_hex(b"abc"))
        );
    }

    #[test]
    fn a_lock_admits_pinned_bytes_and_counts_what_it_refuses() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lock = lock_with(dir.path(), "libp.so", b"good");
        let refused = Family::<RefusalLabels, Counter>::default();
        let policy = TrustPolicy::load(&TrustSettings {
            lock: Some(lock.clone()),
            ..TrustSettings::default()
        })
        .expect("load")
        .counting(refused.clone());
        assert!(policy.admit(&dir.path().join("libp.so"), b"good").is_ok());
        let changed = policy
            .admit(&dir.path().join("libp.so"), b"gooe")
            .expect_err("changed");
        assert_eq!(changed.sha256, digest::sha256_hex(b"gooe"));
        assert_eq!(changed.reason.label(), "hash_differs");
        let other = policy
            .admit(&dir.path().join("libq.so"), b"other")
            .expect_err("other");
        assert_eq!(other.reason, RefusalReason::NotInLock { lock });
        let line = other.to_string();
        assert!(line.starts_with("refused (sha256 "), "{line}");
        assert!(line.contains("not in the lock file"), "{line}");
        let count = |reason: &str| {
            refused
                .get_or_create(&RefusalLabels {
                    reason: reason.into(),
                })
                .get()
        };
        assert_eq!((count("hash_differs"), count("not_in_lock")), (1, 1));
    }

    #[test]
    fn keys_require_a_valid_signature_next_to_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_, secret, base64) = signature::generate(None).expect("keys");
        let secret = minisign::SecretKey::from_unencrypted_box(secret.into()).expect("secret");
        let policy = TrustPolicy::load(&TrustSettings {
            public_keys: vec![base64],
            ..TrustSettings::default()
        })
        .expect("load");
        let file = dir.path().join("libp.so");
        let unsigned = policy.admit(&file, b"code").expect_err("unsigned");
        assert_eq!(unsigned.reason.label(), "unsigned");
        let text = signature::sign(b"code", &secret, "libp.so").expect("sign");
        std::fs::write(signature::signature_path(&file), text).expect("write");
        assert!(policy.admit(&file, b"code").is_ok());
        let tampered = policy.admit(&file, b"codf").expect_err("tampered");
        assert_eq!(tampered.reason.label(), "bad_signature");
    }

    #[test]
    fn an_unreadable_lock_or_key_stops_the_start_with_the_cause() {
        let missing = TrustPolicy::load(&TrustSettings {
            lock: Some(PathBuf::from("/nonexistent/plugins.lock")),
            ..TrustSettings::default()
        })
        .expect_err("missing lock");
        assert!(missing.to_string().contains("/nonexistent/plugins.lock"));
        assert!(matches!(missing, TrustError::Lock(_)), "{missing}");
        let bad_key = TrustPolicy::load(&TrustSettings {
            public_keys: vec!["RWQ".into()],
            ..TrustSettings::default()
        })
        .expect_err("bad key");
        assert!(bad_key.to_string().starts_with("[trust]: public_keys[0]: "));
        assert!(
            matches!(bad_key, TrustError::PublicKey { index: 0, .. }),
            "{bad_key}"
        );
    }
}
