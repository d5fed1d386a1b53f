//! Authentication and authorization, expressed as types.
//!
//! Every tool entry point — `read_file`, `write_file`, `edit_file`, `grep`, `glob`,
//! `bash_execute` (and the process start under it), the jobs, `prepare_upload`,
//! `prepare_download`, a transfer's redemption and probe, `server_overview` — takes an
//! [`Authorized<L>`] for its role level `L`. The only way to obtain one is
//! [`Caller::authorize`], and the only way to obtain a [`Caller`] is [`authenticate`], which
//! looks the caller's token digest up in the executor's own store. Their fields are private to
//! this module, so a handler that runs a tool without a valid token of the right role does not
//! compile:
//!
//! ```compile_fail,E0451
//! # // This module, compiled on its own: the doc test is a crate outside it.
//! # #[path = "../src/auth.rs"]
//! # mod auth;
//! fn forged() -> auth::Authorized<auth::Rw> {
//!     auth::Authorized { caller: todo!(), _level: std::marker::PhantomData }
//! }
//! ```
//!
//! while the way through [`authenticate`] compiles (the same module, the same way):
//!
//! ```
//! # #[path = "../src/auth.rs"]
//! # mod auth;
//! fn authorized(
//!     store: &mymcp_tokens::TokenStore,
//!     token: &mymcp_protocol::TokenDigest,
//! ) -> Option<auth::Authorized<auth::Rw>> {
//!     let caller = auth::authenticate(store, token)?;
//!     caller.authorize(mymcp_protocol::ToolName::WriteFile).ok()
//! }
//! ```
//!
//! A proof carries the [`Caller`] it was made for — today its identity and token digest, next
//! the account a tool acts as — so what a caller gains lands in every proof at once.

use mymcp_protocol::{ErrorCode, Identity, Role, TokenDigest, ToolFailure, ToolName};
use mymcp_tokens::TokenStore;
use std::marker::PhantomData;

/// A token holder that may call MCP tools (role `ro` or `rw`), as [`authenticate`] found it
/// in the store. What the executor knows of a caller goes here; every [`Authorized`] made
/// for it carries it.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    identity: Identity,
    /// The digest the caller authenticated with: what per-token limits, grants and job
    /// ownership are keyed by.
    token: TokenDigest,
}

impl Caller {
    pub(crate) fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Checks that this caller may use `tool` at level `L`.
    pub(crate) fn authorize<L: Level>(&self, tool: ToolName) -> Result<Authorized<L>, ToolFailure> {
        debug_assert_eq!(
            tool.required_role(),
            L::ROLE,
            "tool level mismatch for {tool}"
        );
        if self.identity.role.allows(L::ROLE) && self.identity.role.allows(tool.required_role()) {
            Ok(Authorized {
                caller: self.clone(),
                _level: PhantomData,
            })
        } else {
            Err(ToolFailure::new(
                ErrorCode::PermissionDenied,
                format!(
                    "Permission denied: tool '{tool}' requires {} role",
                    tool.required_role()
                ),
            ))
        }
    }
}

/// Looks a digest up (the token store, then the OAuth grants it answers for). Only `ro`/`rw`
/// tokens are MCP callers; admin and metrics tokens and unknown or disabled tokens are refused
/// alike.
pub(crate) fn authenticate(store: &TokenStore, token: &TokenDigest) -> Option<Caller> {
    // An OAuth access token is keyed by its grant (see `mymcp_tokens::Delegated`).
    let (identity, key) = store.authenticate(token)?;
    identity.role.is_client().then_some(Caller {
        identity,
        token: key,
    })
}

/// A role level a handler can require.
pub(crate) trait Level: sealed::Sealed {
    const ROLE: Role;
}

/// Read-only tools.
#[derive(Debug)]
pub(crate) enum Ro {}
/// Tools that change the host.
#[derive(Debug)]
pub(crate) enum Rw {}

impl Level for Ro {
    const ROLE: Role = Role::Ro;
}
impl Level for Rw {
    const ROLE: Role = Role::Rw;
}

mod sealed {
    pub(crate) trait Sealed {}
    impl Sealed for super::Ro {}
    impl Sealed for super::Rw {}
}

/// Proof that the caller was authenticated and holds level `L`. Not constructible outside
/// this module (see the module documentation). A copy proves no more than the original: work
/// that moves to the blocking pool takes one along.
#[derive(Debug)]
pub(crate) struct Authorized<L: Level> {
    caller: Caller,
    _level: PhantomData<L>,
}

// By hand: a derive would ask `L: Clone` of the level, which is never built.
impl<L: Level> Clone for Authorized<L> {
    fn clone(&self) -> Self {
        Authorized {
            caller: self.caller.clone(),
            _level: PhantomData,
        }
    }
}

impl<L: Level> Authorized<L> {
    pub(crate) fn identity(&self) -> &Identity {
        &self.caller.identity
    }

    /// The caller's token digest (see [`Caller`]).
    pub(crate) fn token(&self) -> &TokenDigest {
        &self.caller.token
    }
}

#[cfg(test)]
impl<L: Level> Authorized<L> {
    /// A proof for the unit tests of a tool: a caller named `test` of role `L`.
    pub(crate) fn for_tests() -> Self {
        Authorized {
            caller: Caller {
                identity: Identity {
                    name: "test".into(),
                    role: L::ROLE,
                },
                token: TokenDigest([0; 32]),
            },
            _level: PhantomData,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mymcp_tokens::digest;

    #[test]
    fn roles_map_to_tools() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::open(&dir.path().join("t.json")).unwrap();
        let (ro, _) = store.add("r", Role::Ro).unwrap();
        let (rw, _) = store.add("w", Role::Rw).unwrap();
        let (admin, _) = store.add("a", Role::Admin).unwrap();
        let (metrics, _) = store.add("m", Role::Metrics).unwrap();

        let ro = authenticate(&store, &digest(&ro)).unwrap();
        let err = ro.authorize::<Rw>(ToolName::BashExecute).unwrap_err();
        assert_eq!(err.code, ErrorCode::PermissionDenied);
        assert_eq!(
            err.message,
            "Permission denied: tool 'bash_execute' requires rw role"
        );
        assert!(ro.authorize::<Ro>(ToolName::ReadFile).is_ok());

        let rw = authenticate(&store, &digest(&rw)).unwrap();
        assert!(rw.authorize::<Rw>(ToolName::BashExecute).is_ok());
        assert!(rw.authorize::<Ro>(ToolName::ReadFile).is_ok());

        assert!(authenticate(&store, &digest(&admin)).is_none());
        assert!(authenticate(&store, &digest(&metrics)).is_none());
        assert!(authenticate(&store, &TokenDigest([0; 32])).is_none());
    }
}
