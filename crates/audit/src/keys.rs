//! The ratcheting signing key: stored as `{"epoch":n,"secret":"<hex>"}` (mode 0600), replaced
//! atomically by the next epoch's key at every seal.

use crate::{hex, unhex};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The key of the current epoch. The secret is zeroed when dropped.
#[derive(Debug)]
pub struct EpochKey {
    pub epoch: u64,
    key: SigningKey,
}

#[derive(Serialize, Deserialize)]
struct KeyFile {
    epoch: u64,
    secret: String,
}

impl EpochKey {
    /// A fresh key for `epoch` from 32 bytes of the caller's CSPRNG output.
    pub fn from_random(epoch: u64, secret: [u8; 32]) -> EpochKey {
        EpochKey {
            epoch,
            key: SigningKey::from_bytes(&secret),
        }
    }

    pub fn public_hex(&self) -> String {
        hex(self.key.verifying_key().as_bytes())
    }

    /// Signs `message`; the signature as hex.
    pub fn sign_hex(&self, message: &[u8]) -> String {
        hex(&self.key.sign(message).to_bytes())
    }

    /// Reads the key file; `Ok(None)` if it does not exist.
    pub fn load(path: &Path) -> io::Result<Option<EpochKey>> {
        let text = match fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let file: KeyFile = serde_json::from_str(&text)
            .map_err(|e| io::Error::other(format!("{}: {e}", path.display())))?;
        let secret: [u8; 32] = unhex(&file.secret)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| io::Error::other(format!("{}: bad secret", path.display())))?;
        Ok(Some(EpochKey::from_random(file.epoch, secret)))
    }

    /// Replaces the key file atomically (temp file, fsync, rename, fsync of the directory).
    pub fn store(&self, path: &Path) -> io::Result<()> {
        let body = serde_json::to_string(&KeyFile {
            epoch: self.epoch,
            secret: hex(self.key.as_bytes()),
        })
        .map_err(io::Error::other)?;
        write_atomic(path, body.as_bytes(), 0o600)
    }
}

/// Parses a 32-byte public key in hex.
pub fn parse_public(hex_key: &str) -> Option<VerifyingKey> {
    let bytes: [u8; 32] = unhex(hex_key.trim())?.try_into().ok()?;
    VerifyingKey::from_bytes(&bytes).ok()
}

/// Checks a hex signature of `message` by `key`.
pub fn verify_hex(key: &VerifyingKey, message: &[u8], sig_hex: &str) -> bool {
    let Some(bytes) = unhex(sig_hex).and_then(|b| <[u8; 64]>::try_from(b).ok()) else {
        return false;
    };
    key.verify_strict(message, &ed25519_dalek::Signature::from_bytes(&bytes))
        .is_ok()
}

/// Writes `body` to `path` atomically with `mode`.
pub fn write_atomic(path: &Path, body: &[u8], mode: u32) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp: PathBuf = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc_o_nofollow())
            .open(&tmp)?;
        f.write_all(body)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// `O_NOFOLLOW` without a libc dependency (its value on every Linux architecture we build for).
fn libc_o_nofollow() -> i32 {
    #[cfg(any(target_arch = "aarch64", target_arch = "arm"))]
    {
        0o100000
    }
    #[cfg(not(any(target_arch = "aarch64", target_arch = "arm")))]
    {
        0o400000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_sign() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let k = EpochKey::from_random(3, [7; 32]);
        k.store(&path).unwrap();
        let back = EpochKey::load(&path).unwrap().unwrap();
        assert_eq!(back.epoch, 3);
        assert_eq!(back.public_hex(), k.public_hex());
        let sig = k.sign_hex(b"hello");
        let public = parse_public(&k.public_hex()).unwrap();
        assert!(verify_hex(&public, b"hello", &sig));
        assert!(!verify_hex(&public, b"hellO", &sig));
        assert!(EpochKey::load(&dir.path().join("none")).unwrap().is_none());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
