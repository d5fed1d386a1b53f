//! File transfers: grants made by `prepare_upload`/`prepare_download`, and their redemption.
//!
//! A *grant* lives in the executor: a random [`GrantId`] bound to the token that made it, a
//! direction, a canonical path, limits and an expiry. The frontend wraps the id in an
//! HMAC-signed URL ticket. Redeeming is one [`crate::FrontendRequest::Redeem`]: the executor
//! checks everything, claims the grant, then sends a [`crate::ServerFrame::Pipe`] frame with
//! one end of a pipe attached (`SCM_RIGHTS`) and moves the bytes between the file and the pipe
//! itself. The request's response ([`crate::FrontendResponse::Transfer`]) comes when the
//! transfer has ended. File contents never ride in frames, and the frontend never receives a
//! descriptor of a host file.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Which way a transfer moves bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Direction {
    /// Client → host file (`PUT`).
    Upload,
    /// Host file → client (`GET`).
    Download,
}

impl Direction {
    /// The HTTP method that redeems a ticket of this direction.
    pub fn method(self) -> &'static str {
        match self {
            Direction::Upload => "PUT",
            Direction::Download => "GET",
        }
    }
}

/// The random id of a grant: 128 bits from the executor's CSPRNG.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GrantId(pub [u8; 16]);

impl fmt::Debug for GrantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Enough to correlate log lines; a grant is a capability, so never the whole id.
        write!(
            f,
            "GrantId({:02x}{:02x}{:02x}{:02x}…)",
            self.0[0], self.0[1], self.0[2], self.0[3]
        )
    }
}

impl GrantId {
    /// The first 8 hex digits: what logs and audit records show.
    pub fn short(&self) -> String {
        self.0[..4].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// `prepare_upload` arguments as the client gave them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrepareUpload {
    /// Absolute path of the file to create or replace.
    pub dest_path: String,
    /// Largest accepted body; default and cap `MYMCP_TRANSFER_MAX_BYTES`; must be positive.
    pub max_bytes: Option<i64>,
    /// Seconds the ticket stays valid; default `MYMCP_TRANSFER_DEFAULT_TTL_SEC`, capped at
    /// `MYMCP_TRANSFER_MAX_TTL_SEC`; must be positive.
    pub expires_in: Option<i64>,
    /// Replace an existing file (default true). When false, enforced again at commit time.
    pub overwrite: Option<bool>,
    /// Expected SHA-256 of the body (64 hex digits); the upload is refused if it differs.
    pub sha256: Option<String>,
}

/// `prepare_download` arguments as the client gave them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrepareDownload {
    /// Absolute path of a regular file.
    pub src_path: String,
    /// As in [`PrepareUpload::expires_in`].
    pub expires_in: Option<i64>,
}

/// What `prepare_upload`/`prepare_download` made: the frontend turns it into a ticket and URL.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferGrant {
    pub grant: GrantId,
    pub direction: Direction,
    /// Seconds after the epoch when the grant expires.
    pub expires_at_unix: u64,
    /// The lifetime after clamping, in seconds.
    pub expires_in: u64,
    /// `expires_at_unix` as `YYYY-MM-DDTHH:MM:SSZ`.
    pub expires_at: String,
    /// The path as the client gave it.
    pub path: String,
    /// Upload: the effective body limit. Download: the file's size now.
    pub bytes: u64,
    /// Upload: whether an existing file may be replaced.
    pub overwrite: bool,
    /// Upload: the expected SHA-256, lower-case hex.
    pub sha256: Option<String>,
}

/// Sent with the pipe ([`crate::ServerFrame::Pipe`]) once a redeem has claimed its grant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferStart {
    /// Identifies this claim of the grant; an upload's [`crate::FrontendRequest::CommitUpload`]
    /// names it, so a late commit can never complete a later attempt.
    pub claim: u64,
    /// Download: exactly how many bytes the pipe will carry (`Content-Length`).
    pub size: Option<u64>,
    /// The file's name (last path component), for `Content-Disposition`.
    pub file_name: String,
}

/// A finished transfer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferDone {
    /// The path as given when the grant was made.
    pub path: String,
    /// Bytes written to the file (upload) or into the pipe (download).
    pub bytes: u64,
    /// Upload: SHA-256 of what was written, lower-case hex.
    pub sha256: Option<String>,
}

/// Why a redeem was refused or failed. The frontend maps each kind to an HTTP status and the
/// reference's `{"ok":false,"error":…,"hint":…}` body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TransferErrorKind {
    /// `MYMCP_TRANSFER_ENABLED=false`.
    Disabled,
    /// No such grant, or the token that made it is no longer valid.
    NotFound,
    Expired,
    /// A transfer with this grant already completed.
    Used,
    /// Another request is transferring with this grant right now.
    InUse,
    /// The method does not match the grant's direction.
    WrongMethod,
    /// The path is (now) protected.
    Protected,
    /// The body is larger than the grant's `max_bytes`.
    TooLarge,
    /// The body's SHA-256 differs from the one the grant expects.
    Sha256Mismatch,
    /// `overwrite: false` and the destination exists.
    Exists,
    /// The file to download is gone or is not a regular file any more.
    PathNotFound,
    /// Writing, syncing or renaming failed.
    WriteFailed,
    /// Reading the file failed.
    ReadFailed,
    /// The client went away or the body was cut.
    Aborted,
    /// Nothing moved for too long.
    Stalled,
    /// Too many transfers at once.
    Busy,
    /// The executor is shutting down.
    ShuttingDown,
    /// The transfer's audit record could not be written: the transfer was refused before it
    /// acted, or an upload was taken back (the hint says which).
    AuditFailed,
    Internal,
}

impl TransferErrorKind {
    /// The `error` string of the HTTP body (the reference's where it has one).
    pub fn as_str(self) -> &'static str {
        match self {
            TransferErrorKind::Disabled => "transfer_disabled",
            TransferErrorKind::NotFound => "ticket_not_found",
            TransferErrorKind::Expired => "ticket_expired",
            TransferErrorKind::Used => "ticket_used",
            TransferErrorKind::InUse => "ticket_in_use",
            TransferErrorKind::WrongMethod => "wrong_method",
            TransferErrorKind::Protected => "path_protected",
            TransferErrorKind::TooLarge => "size_exceeded",
            TransferErrorKind::Sha256Mismatch => "sha256_mismatch",
            TransferErrorKind::Exists => "file_exists",
            TransferErrorKind::PathNotFound => "path_not_found",
            TransferErrorKind::WriteFailed => "write_failed",
            TransferErrorKind::ReadFailed => "read_failed",
            TransferErrorKind::Aborted => "stream_aborted",
            TransferErrorKind::Stalled => "stream_stalled",
            TransferErrorKind::Busy => "busy",
            TransferErrorKind::ShuttingDown => "shutting_down",
            TransferErrorKind::AuditFailed => "audit_failed",
            TransferErrorKind::Internal => "internal_error",
        }
    }
}

impl fmt::Display for TransferErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused or failed redeem: the kind and the hint shown to the client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferError {
    pub kind: TransferErrorKind,
    pub hint: String,
}

impl TransferError {
    pub fn new(kind: TransferErrorKind, hint: impl Into<String>) -> Self {
        TransferError {
            kind,
            hint: hint.into(),
        }
    }
}

impl fmt::Display for TransferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.hint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_ids_are_not_printed_whole() {
        let g = GrantId([0xab; 16]);
        assert_eq!(g.short(), "abababab");
        assert!(format!("{g:?}").len() < 24);
    }

    #[test]
    fn error_strings_keep_the_reference_spelling() {
        assert_eq!(TransferErrorKind::NotFound.as_str(), "ticket_not_found");
        assert_eq!(TransferErrorKind::Expired.as_str(), "ticket_expired");
        assert_eq!(TransferErrorKind::TooLarge.as_str(), "size_exceeded");
        assert_eq!(TransferErrorKind::Protected.as_str(), "path_protected");
        assert_eq!(TransferErrorKind::WrongMethod.as_str(), "wrong_method");
        assert_eq!(Direction::Upload.method(), "PUT");
    }
}
