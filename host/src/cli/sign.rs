//! `agent-host sign` and `agent-host keygen`: minisign signatures of plugin
//! files, and the key pairs that make them.
//!
//! A secret key without a password serves tests and build machines whose
//! key file is protected otherwise; an encrypted one is decrypted with the
//! password in `AGENT_HOST_SIGNING_PASSWORD` (never asked for). Keys and
//! signatures are minisign's own format: `minisign -G`, `minisign -S` and
//! `minisign -V` work with them too.

use crate::trust::signature::{self, key_id, signature_path, PASSWORD_VARIABLE};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Signs each of `files` with the secret key in `key`, writing
/// `FILE.minisig` next to it.
pub fn sign(key: &Path, files: &[PathBuf]) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let secret = signature::read_secret_key(key)?;
    let id = key_id(secret.keynum());
    for file in files {
        let bytes =
            std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = signature::sign(&bytes, &secret, &name)
            .map_err(|e| format!("cannot sign {}: {e}", file.display()))?;
        let target = signature_path(file);
        std::fs::write(&target, text)
            .map_err(|e| format!("cannot write {}: {e}", target.display()))?;
        println!(
            "signed {} -> {} (key {id})",
            file.display(),
            target.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Makes a key pair: the secret key at `secret_key`, the public key at
/// `public_key`; refuses to overwrite either unless `force`.
pub fn keygen(
    secret_key: &Path,
    public_key: &Path,
    force: bool,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    for path in [secret_key, public_key] {
        if path.exists() && !force {
            return Err(format!("{} exists (--force overwrites it)", path.display()).into());
        }
    }
    let password = std::env::var(PASSWORD_VARIABLE).ok();
    let encrypted = password.is_some();
    let (public, secret, base64) = signature::generate(password)?;
    write_private(secret_key, &secret)
        .map_err(|e| format!("cannot write {}: {e}", secret_key.display()))?;
    std::fs::write(public_key, public)
        .map_err(|e| format!("cannot write {}: {e}", public_key.display()))?;
    println!(
        "secret key: {} ({})",
        secret_key.display(),
        if encrypted {
            format!("encrypted with the password in {PASSWORD_VARIABLE}")
        } else {
            format!("no password; set {PASSWORD_VARIABLE} to encrypt it")
        }
    );
    println!("public key: {}", public_key.display());
    println!("trust it in the agent's config:\n[trust]\npublic_keys = [\"{base64}\"]");
    Ok(ExitCode::SUCCESS)
}

/// Writes a file only its owner may read (on Unix).
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    std::io::Write::write_all(&mut options.open(path)?, text.as_bytes())
}
