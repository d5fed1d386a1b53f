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
//! # // This module (and the accounts it resolves), compiled on its own: the doc test is a
//! # // crate outside it, with a `main` of its own so that the modules sit at its root.
//! # #[path = "../src/accounts.rs"]
//! # mod accounts;
//! # #[path = "../src/auth.rs"]
//! # mod auth;
//! fn forged() -> auth::Authorized<auth::Rw> {
//!     auth::Authorized { caller: todo!(), account: todo!(), _level: std::marker::PhantomData }
//! }
//! # fn main() {}
//! ```
//!
//! while the way through [`authenticate`] compiles (the same module, the same way):
//!
//! ```
//! # #[path = "../src/accounts.rs"]
//! # mod accounts;
//! # #[path = "../src/auth.rs"]
//! # mod auth;
//! async fn authorized(
//!     store: &mymcp_tokens::TokenStore,
//!     accounts: &std::sync::Arc<accounts::Accounts>,
//!     token: &mymcp_protocol::TokenDigest,
//! ) -> Option<auth::Authorized<auth::Rw>> {
//!     let caller = auth::authenticate(store, token)?.resolve(accounts).await;
//!     caller.authorize(mymcp_protocol::ToolName::WriteFile).ok()
//! }
//! # // `main` of its own, so that the modules above sit at the crate's root.
//! # fn main() {}
//! ```
//!
//! A proof carries the [`Caller`] it was made for — its identity, token digest and the
//! [`Account`] its tools act as. That account comes from the executor's store only (the token's
//! `user`) and is resolved through NSS for the call ([`Caller::resolve`]); a proof exists only
//! for a caller whose account resolved, so a tool cannot run without one. The tools act as it
//! through [`Authorized::act`] (file work) and [`Authorized::account`] (commands).

use crate::accounts::{Account, Accounts, Acting};
use mymcp_protocol::{
    ErrorCode, Identity, Role, TokenDigest, TokenLimits, TokenView, ToolFailure, ToolName,
};
use mymcp_tokens::TokenStore;
use std::marker::PhantomData;
use std::sync::Arc;

/// A token holder that may call MCP tools (role `ro` or `rw`), as [`authenticate`] found it
/// in the store. What the executor knows of a caller goes here; every [`Authorized`] made
/// for it carries it.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    identity: Identity,
    /// The digest the caller authenticated with: what per-token limits, grants and job
    /// ownership are keyed by.
    token: TokenDigest,
    /// The account the token acts as, as the store names it.
    user: String,
    /// The token's own limits on its commands (unset fields: the defaults).
    limits: TokenLimits,
    /// Its commands' view of the host.
    view: Arc<TokenView>,
    /// An OAuth client's grant: a refusal for its role invites it to ask for more.
    delegated: bool,
    /// That account for this call, once [`Caller::resolve`] looked it up (or why it cannot be
    /// acted as); `None` before.
    account: Option<Result<Arc<Account>, ToolFailure>>,
}

impl Caller {
    pub(crate) fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The name of the account the token acts as (from the store).
    pub(crate) fn user(&self) -> &str {
        &self.user
    }

    /// The uid of that account, once resolved.
    pub(crate) fn uid(&self) -> Option<u32> {
        match &self.account {
            Some(Ok(a)) => Some(a.uid),
            _ => None,
        }
    }

    /// Resolves the caller's account for this call: from recent resolutions when they still
    /// hold, else through NSS on the blocking pool (a directory service may take a while).
    pub(crate) async fn resolve(mut self, accounts: &Arc<Accounts>) -> Caller {
        let resolved = match accounts.resolve_now(&self.user) {
            Some(r) => r,
            None => {
                let (accounts, user) = (accounts.clone(), self.user.clone());
                tokio::task::spawn_blocking(move || accounts.lookup(&user))
                    .await
                    .unwrap_or_else(|e| {
                        Err(ToolFailure::new(
                            ErrorCode::InternalError,
                            format!("account lookup failed: {e}"),
                        ))
                    })
            }
        };
        self.account = Some(resolved);
        self
    }

    /// [`Caller::resolve`] on this thread (for unit tests outside a runtime).
    #[cfg(test)]
    pub(crate) fn resolve_here(mut self, accounts: &Accounts) -> Caller {
        let resolved = accounts
            .resolve_now(&self.user)
            .unwrap_or_else(|| accounts.lookup(&self.user));
        self.account = Some(resolved);
        self
    }

    /// Checks that this caller may use `tool` at level `L` (the role first: a refusal for the
    /// role is the same whatever the account), and that its account resolved.
    pub(crate) fn authorize<L: Level>(&self, tool: ToolName) -> Result<Authorized<L>, ToolFailure> {
        debug_assert_eq!(
            tool.required_role(),
            L::ROLE,
            "tool level mismatch for {tool}"
        );
        if !(self.identity.role.allows(L::ROLE) && self.identity.role.allows(tool.required_role()))
        {
            let denied = format!(
                "Permission denied: tool '{tool}' requires {} role",
                tool.required_role()
            );
            return Err(match self.delegated {
                true => ToolFailure::new(
                    ErrorCode::InsufficientScope,
                    format!("{denied}: this client was approved for less; sign in again asking for mymcp:{}", tool.required_role()),
                ),
                false => ToolFailure::new(ErrorCode::PermissionDenied, denied),
            });
        }
        match &self.account {
            Some(Ok(account)) => Ok(Authorized {
                caller: self.clone(),
                account: account.clone(),
                _level: PhantomData,
            }),
            Some(Err(failure)) => Err(failure.clone()),
            None => Err(ToolFailure::new(
                ErrorCode::InternalError,
                format!("the account of the caller of '{tool}' was not resolved; nothing ran"),
            )),
        }
    }
}

/// Looks a digest up (the token store, then the OAuth grants it answers for). Only `ro`/`rw`
/// tokens are MCP callers; admin and metrics tokens and unknown or disabled tokens are refused
/// alike. The caller's account is resolved later, by [`Caller::resolve`], only for what runs a
/// tool.
pub(crate) fn authenticate(store: &TokenStore, token: &TokenDigest) -> Option<Caller> {
    // An OAuth access token is keyed by its grant (see `mymcp_tokens::Delegated`).
    let (holder, key) = store.authenticate(token)?;
    holder.identity.role.is_client().then_some(Caller {
        identity: holder.identity,
        token: key,
        user: holder.user,
        limits: holder.limits,
        view: Arc::new(holder.view),
        delegated: holder.delegated,
        account: None,
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
    /// The caller's account, resolved for this call.
    account: Arc<Account>,
    _level: PhantomData<L>,
}

// By hand: a derive would ask `L: Clone` of the level, which is never built.
impl<L: Level> Clone for Authorized<L> {
    fn clone(&self) -> Self {
        Authorized {
            caller: self.caller.clone(),
            account: self.account.clone(),
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

    /// The account the caller's tools act as.
    pub(crate) fn account(&self) -> &Account {
        &self.account
    }

    /// The token's own limits on its commands, from the store (unset fields: the defaults).
    pub(crate) fn limits(&self) -> &TokenLimits {
        &self.caller.limits
    }

    /// The token's view of the host for its commands and tools (write roots, hidden paths,
    /// network).
    pub(crate) fn view(&self) -> &TokenView {
        &self.caller.view
    }

    /// Makes the calling thread act as the caller's account for file work until the guard
    /// drops (see [`Account::act`]); every thread that does a call's file work takes one.
    pub(crate) fn act(&self) -> Result<Acting, ToolFailure> {
        self.account.act()
    }
}

#[cfg(test)]
impl<L: Level> Authorized<L> {
    /// A proof for the unit tests of a tool: a caller named `test` of role `L`, acting as root.
    pub(crate) fn for_tests() -> Self {
        let root = Accounts::new().lookup("root");
        Self::for_tests_as(root.unwrap_or_else(|_| unreachable!("root is never looked up")))
    }

    /// As [`Authorized::for_tests`], acting as `account`.
    pub(crate) fn for_tests_as(account: Arc<Account>) -> Self {
        Authorized {
            caller: Caller {
                identity: Identity {
                    name: "test".into(),
                    role: L::ROLE,
                },
                token: TokenDigest([0; 32]),
                user: account.name.clone(),
                limits: TokenLimits::default(),
                view: Arc::default(),
                delegated: false,
                account: Some(Ok(account.clone())),
            },
            account,
            _level: PhantomData,
        }
    }

    /// As [`Authorized::for_tests`], for a token with `view`.
    pub(crate) fn for_tests_with_view(view: TokenView) -> Self {
        let mut auth = Self::for_tests();
        auth.caller.view = Arc::new(view);
        auth
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mymcp_tokens::digest;

    #[test]
    fn an_oauth_client_approved_for_less_is_told_it_may_ask_for_more() {
        let accounts = Accounts::new();
        let mut caller = Authorized::<Ro>::for_tests().caller.clone();
        let static_token = caller.authorize::<Rw>(ToolName::BashExecute).unwrap_err();
        assert_eq!(static_token.code, ErrorCode::PermissionDenied);
        caller.delegated = true;
        let oauth = caller
            .resolve_here(&accounts)
            .authorize::<Rw>(ToolName::BashExecute)
            .unwrap_err();
        assert_eq!(oauth.code, ErrorCode::InsufficientScope);
        assert!(oauth.message.contains("mymcp:rw"), "{}", oauth.message);
    }

    #[test]
    fn roles_map_to_tools() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::open(&dir.path().join("t.json")).unwrap();
        let (ro, _) = store.add("r", Role::Ro).unwrap();
        let (rw, _) = store.add("w", Role::Rw).unwrap();
        let (admin, _) = store.add("a", Role::Admin).unwrap();
        let (metrics, _) = store.add("m", Role::Metrics).unwrap();

        let accounts = Accounts::new();
        let ro = authenticate(&store, &digest(&ro))
            .unwrap()
            .resolve_here(&accounts);
        let err = ro.authorize::<Rw>(ToolName::BashExecute).unwrap_err();
        assert_eq!(err.code, ErrorCode::PermissionDenied);
        assert_eq!(
            err.message,
            "Permission denied: tool 'bash_execute' requires rw role"
        );
        assert!(ro.authorize::<Ro>(ToolName::ReadFile).is_ok());

        let rw = authenticate(&store, &digest(&rw))
            .unwrap()
            .resolve_here(&accounts);
        assert!(rw.authorize::<Rw>(ToolName::BashExecute).is_ok());
        assert!(rw.authorize::<Ro>(ToolName::ReadFile).is_ok());

        assert!(authenticate(&store, &digest(&admin)).is_none());
        assert!(authenticate(&store, &digest(&metrics)).is_none());
        assert!(authenticate(&store, &TokenDigest([0; 32])).is_none());
    }

    #[test]
    fn a_proof_carries_the_tokens_account_and_none_is_made_without_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::open(&dir.path().join("t.json")).unwrap();
        let (nobody, _) = store.add_as("n", Role::Rw, Some("nobody")).unwrap();
        let (gone, _) = store
            .add_as("g", Role::Ro, Some("no-such-user-mymcp"))
            .unwrap();
        let accounts = Accounts::new();

        let caller = authenticate(&store, &digest(&nobody)).unwrap();
        assert_eq!(caller.user(), "nobody");
        let unresolved = caller.authorize::<Rw>(ToolName::BashExecute).unwrap_err();
        assert_eq!(
            unresolved.code,
            ErrorCode::InternalError,
            "no proof before resolve"
        );
        let proof = caller
            .resolve_here(&accounts)
            .authorize::<Rw>(ToolName::BashExecute)
            .unwrap();
        assert_eq!(proof.account().name, "nobody");
        assert_ne!(proof.account().uid, 0);

        let caller = authenticate(&store, &digest(&gone))
            .unwrap()
            .resolve_here(&accounts);
        assert_eq!(caller.uid(), None);
        // The role decides first: the same refusal whatever the account.
        let e = caller.authorize::<Rw>(ToolName::BashExecute).unwrap_err();
        assert_eq!(e.code, ErrorCode::PermissionDenied);
        let e = caller.authorize::<Ro>(ToolName::ReadFile).unwrap_err();
        assert_eq!(e.code, ErrorCode::AccountUnavailable);
        assert!(e.message.contains("no-such-user-mymcp"), "{}", e.message);
    }
}
