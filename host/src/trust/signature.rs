//! Detached minisign signatures of plugin files: `libweather.so.minisig`
//! next to `libweather.so`, verified against the operator's trusted public
//! keys; and the signing side (`agent-host sign`, `agent-host keygen`).
//!
//! Every piece of cryptography is the `minisign` crate's (Ed25519 over the
//! file's BLAKE2b prehash, plus the signed trusted comment); this module
//! only picks the key and words the outcome.

use crate::regular_file;
use crate::shared_cause::SharedCause;
use minisign::{KeyPair, PError, PublicKey, SignatureBox};

pub use minisign::SecretKey;
use std::io::{self, Cursor};
use std::path::{Path, PathBuf};

/// The extension of a detached signature, after the file's own name.
pub const SIGNATURE_EXTENSION: &str = "minisig";

/// The environment variable that holds the password of an encrypted
/// secret key, for `agent-host sign`, `agent-host keygen` and
/// `cargo xtask build-plugins --sign`.
pub const PASSWORD_VARIABLE: &str = "AGENT_HOST_SIGNING_PASSWORD";

/// The most bytes a signature file (or a key file) may hold: a `.minisig`
/// is a few hundred bytes, a key file less.
pub const MAX_SIGNATURE_BYTES: u64 = 4096;

/// The signature file of `file`: `file` with `.minisig` appended.
pub fn signature_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_os_string();
    name.push(".");
    name.push(SIGNATURE_EXTENSION);
    PathBuf::from(name)
}

/// A key's id as minisign prints it: 16 uppercase hexadecimal digits.
pub fn key_id(keynum: &[u8]) -> String {
    let mut bytes = [0u8; 8];
    for (to, from) in bytes.iter_mut().zip(keynum) {
        *to = *from;
    }
    format!("{:016X}", u64::from_le_bytes(bytes))
}

/// One public key the operator trusts.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    /// Its id ([`key_id`]).
    pub id: String,
    key: PublicKey,
}

/// Why a key cannot be read, or a signature or key pair not made.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The text holds no line but comments.
    #[error("no public key in it")]
    NoPublicKey,
    /// The key line is not a minisign public key.
    #[error("not a minisign public key: {0}")]
    NotAPublicKey(#[source] PError),
    /// The secret key file cannot be read.
    #[error("secret key {}: {cause}", file.display())]
    ReadSecretKey {
        /// The key file.
        file: PathBuf,
        /// The operating system's error.
        #[source]
        cause: io::Error,
    },
    /// The secret key file holds no secret key this host can use.
    #[error("secret key {}: {cause}", file.display())]
    SecretKeyFile {
        /// The key file.
        file: PathBuf,
        /// What is wrong with its text.
        #[source]
        cause: Box<KeyError>,
    },
    /// The text is not an unencrypted secret key, and no password is set
    /// to decrypt an encrypted one.
    #[error(
        "not an unencrypted minisign secret key ({0}); for an encrypted one \
         set {PASSWORD_VARIABLE} to its password"
    )]
    NeedsPassword(#[source] PError),
    /// minisign could not decrypt the key, sign, or make a key pair.
    #[error(transparent)]
    Minisign(#[from] PError),
}

/// Reads a public key from its base64 form (`RWQ...`, as in the config) or
/// from the text of a minisign `.pub` file (a comment line, then the key).
pub fn parse_public_key(text: &str) -> Result<TrustedKey, KeyError> {
    let line = text
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !l.starts_with("untrusted comment:"))
        .ok_or(KeyError::NoPublicKey)?;
    let key = PublicKey::from_base64(line).map_err(KeyError::NotAPublicKey)?;
    Ok(TrustedKey {
        id: key_id(key.keynum()),
        key,
    })
}

/// Why a signature does not admit a file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureProblem {
    /// There is no signature file.
    #[error(
        "unsigned: no signature {} (sign it with `agent-host sign`)",
        signature.display()
    )]
    Missing {
        /// Where it was looked for.
        signature: PathBuf,
    },
    /// The signature file cannot be read.
    #[error("unreadable signature: {}: {cause}", signature.display())]
    Unreadable {
        /// The signature file.
        signature: PathBuf,
        /// The operating system's error.
        #[source]
        cause: SharedCause<io::Error>,
    },
    /// The signature file's text is not a minisign signature.
    #[error("unreadable signature: {cause}")]
    Malformed {
        /// minisign's error.
        #[source]
        cause: SharedCause<PError>,
    },
    /// The signature was made with a key the operator does not trust.
    #[error("signed by key {key_id}, which is not among [trust] public_keys")]
    UntrustedKey {
        /// The signing key's id.
        key_id: String,
    },
    /// The signature does not match the file's bytes (or its trusted
    /// comment): the file was changed after it was signed.
    #[error(
        "bad signature: the file does not match its signature by key {key_id} (changed after signing?)"
    )]
    Invalid {
        /// The signing key's id.
        key_id: String,
    },
}

/// The public keys the operator trusts.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: Vec<TrustedKey>,
}

impl TrustedKeys {
    /// The keys given.
    pub fn new(keys: Vec<TrustedKey>) -> Self {
        Self { keys }
    }

    /// Whether no key is trusted (signatures are then not required).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks that `file`'s signature file holds a valid signature of
    /// `bytes` (the bytes that will be loaded) by a trusted key; returns
    /// that key's id. The signature file must be a regular file of at most
    /// [`MAX_SIGNATURE_BYTES`]: a FIFO or a device is refused without
    /// waiting on it or reading it.
    pub fn verify_file(&self, file: &Path, bytes: &[u8]) -> Result<String, SignatureProblem> {
        let signature = signature_path(file);
        let text = match regular_file::read_to_string(&signature, MAX_SIGNATURE_BYTES) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SignatureProblem::Missing { signature })
            }
            Err(cause) => {
                return Err(SignatureProblem::Unreadable {
                    signature,
                    cause: cause.into(),
                })
            }
        };
        self.verify(bytes, &text)
    }

    /// Checks that `signature` (a `.minisig` file's text) is a valid
    /// signature of `bytes` by a trusted key; returns that key's id.
    pub fn verify(&self, bytes: &[u8], signature: &str) -> Result<String, SignatureProblem> {
        let signature =
            SignatureBox::from_string(signature).map_err(|cause| SignatureProblem::Malformed {
                cause: cause.into(),
            })?;
        let id = key_id(signature.keynum());
        let trusted = self
            .keys
            .iter()
            .find(|k| k.key.keynum() == signature.keynum())
            .ok_or_else(|| SignatureProblem::UntrustedKey { key_id: id.clone() })?;
        // Legacy (not prehashed) signatures are refused: minisign itself
        // has made prehashed ones by default for years.
        minisign::verify(
            &trusted.key,
            &signature,
            Cursor::new(bytes),
            true,
            false,
            false,
        )
        .map_err(|_| SignatureProblem::Invalid { key_id: id.clone() })?;
        Ok(id)
    }
}

/// Reads a minisign secret key file. An encrypted key is decrypted with the
/// password in [`PASSWORD_VARIABLE`]; the password is never asked for.
pub fn read_secret_key(path: &Path) -> Result<SecretKey, KeyError> {
    let text = regular_file::read_to_string(path, MAX_SIGNATURE_BYTES).map_err(|cause| {
        KeyError::ReadSecretKey {
            file: path.to_path_buf(),
            cause,
        }
    })?;
    secret_key_from_text(&text).map_err(|cause| KeyError::SecretKeyFile {
        file: path.to_path_buf(),
        cause: Box::new(cause),
    })
}

/// Reads a minisign secret key from its file's text, decrypting an
/// encrypted one with the password in [`PASSWORD_VARIABLE`].
pub fn secret_key_from_text(text: &str) -> Result<SecretKey, KeyError> {
    match SecretKey::from_unencrypted_box(text.to_string().into()) {
        Ok(key) => Ok(key),
        Err(unencrypted) => match std::env::var(PASSWORD_VARIABLE) {
            Ok(password) => Ok(SecretKey::from_box(
                text.to_string().into(),
                Some(password),
            )?),
            Err(_) => Err(KeyError::NeedsPassword(unencrypted)),
        },
    }
}

/// Signs `bytes` with `key`; returns the text of the `.minisig` file. The
/// trusted comment names `file_name`, as minisign's does.
pub fn sign(bytes: &[u8], key: &SecretKey, file_name: &str) -> Result<String, KeyError> {
    let trusted = format!(
        "timestamp:{}\tfile:{file_name}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    );
    let signature = minisign::sign(
        None,
        key,
        Cursor::new(bytes),
        Some(&trusted),
        Some("signature from agent-host secret key"),
    )?;
    Ok(signature.into_string())
}

/// A new key pair: the public key file's text, the secret key file's text,
/// and the public key in base64 (for `[trust] public_keys`). The secret key
/// is encrypted with `password` when one is given.
pub fn generate(password: Option<String>) -> Result<(String, String, String), KeyError> {
    let pair = match password {
        Some(password) => KeyPair::generate_encrypted_keypair(Some(password)),
        None => KeyPair::generate_unencrypted_keypair(),
    }?;
    let public = pair.pk.to_box()?.into_string();
    let secret = pair.sk.to_box(None)?.into_string();
    Ok((public, secret, pair.pk.to_base64()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (TrustedKey, SecretKey) {
        let (public, secret, base64) = generate(None).expect("keys");
        let from_file = parse_public_key(&public).expect("the .pub text");
        let from_config = parse_public_key(&base64).expect("the base64");
        assert_eq!(from_file.id, from_config.id);
        let secret = SecretKey::from_unencrypted_box(secret.into()).expect("secret");
        (from_config, secret)
    }

    #[test]
    fn a_signature_admits_exactly_the_signed_bytes() {
        let (public, secret) = pair();
        let keys = TrustedKeys::new(vec![public.clone()]);
        let signature = sign(b"plugin bytes", &secret, "libp.so").expect("sign");
        assert_eq!(
            keys.verify(b"plugin bytes", &signature),
            Ok(public.id.clone())
        );
        assert_eq!(
            keys.verify(b"plugin bytez", &signature),
            Err(SignatureProblem::Invalid { key_id: public.id })
        );
    }

    #[test]
    fn a_signature_by_another_key_is_untrusted() {
        let (trusted, _) = pair();
        let (other, other_secret) = pair();
        let keys = TrustedKeys::new(vec![trusted]);
        let signature = sign(b"bytes", &other_secret, "libp.so").expect("sign");
        assert_eq!(
            keys.verify(b"bytes", &signature),
            Err(SignatureProblem::UntrustedKey { key_id: other.id })
        );
    }

    #[test]
    fn a_missing_or_garbled_signature_is_named() {
        let (public, _) = pair();
        let keys = TrustedKeys::new(vec![public]);
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("libp.so");
        assert_eq!(
            keys.verify_file(&file, b"bytes"),
            Err(SignatureProblem::Missing {
                signature: dir.path().join("libp.so.minisig")
            })
        );
        std::fs::write(signature_path(&file), "not a signature").expect("write");
        assert!(matches!(
            keys.verify_file(&file, b"bytes"),
            Err(SignatureProblem::Malformed { .. })
        ));
        assert!(matches!(
            parse_public_key("RWQnot-a-key"),
            Err(KeyError::NotAPublicKey(_))
        ));
        assert!(matches!(parse_public_key(""), Err(KeyError::NoPublicKey)));
    }

    #[test]
    fn an_encrypted_key_needs_its_password() {
        let (_, secret, _) = generate(Some("pw".into())).expect("keys");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k.key");
        std::fs::write(&path, secret).expect("write");
        if std::env::var(PASSWORD_VARIABLE).is_err() {
            let error = read_secret_key(&path).expect_err("no password");
            assert!(
                matches!(&error, KeyError::SecretKeyFile { cause, .. }
                    if matches!(**cause, KeyError::NeedsPassword(_))),
                "{error}"
            );
            assert!(error.to_string().contains(PASSWORD_VARIABLE), "{error}");
        }
    }
}
