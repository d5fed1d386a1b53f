//! The throwaway self-signed certificate of `mymcpctl serve --tls`.
//!
//! Generated with `rcgen` (ECDSA P-256) for the names a local client uses — `localhost`,
//! `127.0.0.1`, `::1` and the host `serve` listens on — valid for 30 days, and written next to
//! the quick try's other state, so it vanishes with it. Clients trust it by its file (as their
//! CA) or check its SHA-256 fingerprint.

use anyhow::Context;
use sha2::{Digest, Sha256};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A generated certificate on disk.
#[derive(Debug, Clone)]
pub struct SelfSigned {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// SHA-256 of the DER certificate, `AB:CD:…` as `openssl x509 -fingerprint -sha256`.
    pub fingerprint: String,
}

/// The names the certificate is valid for: the loopback names and `host` if it is another.
pub fn names_for(host: &str) -> Vec<String> {
    let mut names: Vec<String> = ["localhost", "127.0.0.1", "::1"].map(String::from).into();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let unspecified = host
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_unspecified());
    if !host.is_empty() && !unspecified && !names.iter().any(|n| n == host) {
        names.push(host.to_owned());
    }
    names
}

/// Generates a certificate for `names` and writes `cert.pem` (0644) and `key.pem` (0640,
/// group `gid` when given, so that the frontend's group can read it) into `dir`.
pub fn generate(dir: &Path, names: Vec<String>, gid: Option<u32>) -> anyhow::Result<SelfSigned> {
    let mut params = rcgen::CertificateParams::new(names).context("certificate names")?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "mymcp quick try (self-signed)");
    let now = std::time::SystemTime::now();
    params.not_before = (now - std::time::Duration::from_secs(300)).into();
    params.not_after = (now + std::time::Duration::from_secs(30 * 86400)).into();
    let key = rcgen::KeyPair::generate().context("generating a key")?;
    let cert = params
        .self_signed(&key)
        .context("signing the certificate")?;

    let paths = (dir.join("cert.pem"), dir.join("key.pem"));
    write_file(&paths.1, key.serialize_pem().as_bytes(), 0o640)?;
    if let Some(gid) = gid {
        std::os::unix::fs::chown(&paths.1, Some(0), Some(gid))
            .with_context(|| format!("chown {}", paths.1.display()))?;
    }
    write_file(&paths.0, cert.pem().as_bytes(), 0o644)?;
    Ok(SelfSigned {
        fingerprint: fingerprint(cert.der()),
        cert: paths.0,
        key: paths.1,
    })
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)?;
    // The umask may have narrowed the mode.
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// `AB:CD:…` SHA-256 of DER bytes.
pub fn fingerprint(der: &[u8]) -> String {
    let hex: Vec<String> = Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    hex.join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cover_loopback_and_the_listen_host() {
        assert_eq!(names_for("127.0.0.1"), ["localhost", "127.0.0.1", "::1"]);
        assert_eq!(names_for("0.0.0.0").len(), 3);
        assert_eq!(names_for("[::]").len(), 3);
        assert_eq!(names_for("mcp.example.test")[3], "mcp.example.test");
    }

    #[test]
    fn writes_a_certificate_and_a_private_key() {
        let dir = tempfile::tempdir().unwrap();
        let c = generate(dir.path(), names_for("127.0.0.1"), None).unwrap();
        let pem = std::fs::read_to_string(&c.cert).unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
        let key = std::fs::metadata(&c.key).unwrap();
        assert_eq!(key.permissions().mode() & 0o777, 0o640);
        assert_eq!(c.fingerprint.len(), 95);
    }
}
