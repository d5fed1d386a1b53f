//! In-flight `tools/call` requests by their JSON-RPC id, so that an MCP
//! `notifications/cancelled` can stop the right one.
//!
//! The server is stateless, so a cancellation arrives as its own POST, possibly on another
//! connection, naming only the JSON-RPC id of the request to stop. Ids are chosen by each
//! client session and repeat across sessions (every MCP SDK session counts from 0), so a
//! running call is registered under a [`CallKey`] of
//! - the caller's token digest: nobody can cancel a call made with another token;
//! - the `Mcp-Session-Id` the client sent, if any: the frontend hands one out on `initialize`
//!   (random, neither stored nor checked, like the Go reference's), which keeps sessions of
//!   one token apart;
//! - the id exactly as sent (`1` and `"1"` are different ids).
//!
//! A cancellation that matches more than one running call (sessionless clients reusing ids
//! under one token) stops none of them: running a command on is the safe failure, killing
//! someone else's is not. Registrations live exactly as long as their call; nothing else is
//! kept.

use mymcp_protocol::TokenDigest;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::oneshot;

/// What a running call is known by.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CallKey {
    token: TokenDigest,
    session: Option<String>,
    /// The JSON-RPC id, serialized.
    id: String,
}

impl CallKey {
    pub fn new(token: TokenDigest, session: Option<&str>, id: &Value) -> CallKey {
        CallKey {
            token,
            session: session.map(str::to_owned),
            id: id.to_string(),
        }
    }
}

/// What [`CallRegistry::cancel`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cancelled {
    /// The call was told to stop.
    One,
    /// No running call has this key (it finished, or never existed).
    NoMatch,
    /// Several running calls have this key; none was stopped.
    Ambiguous(usize),
}

/// Running calls by key: (registration serial, cancel trigger) for each.
type Calls = HashMap<CallKey, Vec<(u64, oneshot::Sender<()>)>>;

/// The running calls.
#[derive(Debug, Default)]
pub struct CallRegistry {
    next: AtomicU64,
    calls: Mutex<Calls>,
}

/// A registered call; unregistered on drop.
#[derive(Debug)]
pub struct Registration {
    registry: Arc<CallRegistry>,
    key: CallKey,
    serial: u64,
}

impl CallRegistry {
    fn lock(&self) -> MutexGuard<'_, Calls> {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a running call. The receiver gets a value when the call is cancelled.
    pub fn register(self: &Arc<Self>, key: CallKey) -> (Registration, oneshot::Receiver<()>) {
        let serial = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.lock()
            .entry(key.clone())
            .or_default()
            .push((serial, tx));
        let registration = Registration {
            registry: self.clone(),
            key,
            serial,
        };
        (registration, rx)
    }

    /// Cancels the running call registered under `key`, if exactly one is.
    pub fn cancel(&self, key: &CallKey) -> Cancelled {
        let mut calls = self.lock();
        let Some(entries) = calls.get_mut(key) else {
            return Cancelled::NoMatch;
        };
        if entries.len() > 1 {
            return Cancelled::Ambiguous(entries.len());
        }
        let (_, tx) = entries.remove(0);
        calls.remove(key);
        match tx.send(()) {
            Ok(()) => Cancelled::One,
            Err(()) => Cancelled::NoMatch,
        }
    }

    /// Calls registered right now.
    pub fn len(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut calls = self.registry.lock();
        if let Some(entries) = calls.get_mut(&self.key) {
            entries.retain(|(serial, _)| *serial != self.serial);
            if entries.is_empty() {
                calls.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const A: TokenDigest = TokenDigest([1; 32]);
    const B: TokenDigest = TokenDigest([2; 32]);

    #[test]
    fn a_cancel_reaches_only_the_call_with_the_same_token_session_and_id() {
        let registry = Arc::new(CallRegistry::default());
        let (_r1, mut rx1) = registry.register(CallKey::new(A, Some("s1"), &json!(7)));
        let (_r2, mut rx2) = registry.register(CallKey::new(A, Some("s2"), &json!(7)));
        let (_r3, mut rx3) = registry.register(CallKey::new(B, Some("s1"), &json!(7)));
        let (_r4, mut rx4) = registry.register(CallKey::new(A, Some("s1"), &json!("7")));

        assert_eq!(
            registry.cancel(&CallKey::new(A, Some("s1"), &json!(7))),
            Cancelled::One
        );
        assert!(rx1.try_recv().is_ok());
        assert!(rx2.try_recv().is_err());
        assert!(rx3.try_recv().is_err());
        assert!(rx4.try_recv().is_err());
        // Gone once cancelled.
        assert_eq!(
            registry.cancel(&CallKey::new(A, Some("s1"), &json!(7))),
            Cancelled::NoMatch
        );
    }

    #[test]
    fn an_ambiguous_cancel_stops_nothing() {
        let registry = Arc::new(CallRegistry::default());
        let key = CallKey::new(A, None, &json!(1));
        let (_r1, mut rx1) = registry.register(key.clone());
        let (r2, mut rx2) = registry.register(key.clone());
        assert_eq!(registry.cancel(&key), Cancelled::Ambiguous(2));
        assert!(rx1.try_recv().is_err() && rx2.try_recv().is_err());
        drop(r2);
        assert_eq!(registry.cancel(&key), Cancelled::One);
        assert!(rx1.try_recv().is_ok());
    }

    #[test]
    fn registrations_end_with_their_call() {
        let registry = Arc::new(CallRegistry::default());
        let (r, _rx) = registry.register(CallKey::new(A, None, &json!(1)));
        assert_eq!(registry.len(), 1);
        drop(r);
        assert!(registry.is_empty());
        assert!(registry.lock().is_empty());
    }
}
