//! Which connections the frontend keeps: a cap on all connections, a cap per client address,
//! and which idle connection makes room for a new one.
//!
//! Every accepted TCP connection asks [`Admission::admit`] for a slot before anything is read
//! from it:
//!
//! - under both caps it gets a [`Slot`], held until its socket is closed (lingering included);
//! - at a cap, the connection that has been idle longest — no request in flight: still
//!   without its first request's headers, between keep-alive requests, an HTTP/2 connection
//!   without a stream, or lingering after a refusal — is closed to make room (at the
//!   per-address cap, the longest idle of that address). Idle connections cost a peer
//!   nothing to hold, so a flood of them must not keep out a client that sends a request;
//!   connections with a request in flight are never closed for a newcomer;
//! - when nothing can make room, the connection gets a short [`Refusal`] instead: `/health`
//!   is answered and everything else gets `503` with `Retry-After` (see [`crate::server`]).
//!   Refusals have a small budget of their own ([`RESERVE`], [`RESERVE_PER_ADDRESS`]);
//!   beyond it the connection is closed at once, unanswered.
//!
//! Addresses are counted as IPv4 addresses and IPv6 /64 prefixes (one subscriber's network:
//! an IPv6 client chooses among 2⁶⁴ addresses of its own). Trusted reverse proxies
//! (`MYMCP_TRUSTED_PROXIES`) carry many clients' connections, so only the global cap applies
//! to them.

use crate::origin::TrustedProxies;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;

/// Connections at once that get a refusal (`503`, or `/health`) rather than being closed
/// unanswered when nothing can make room.
pub const RESERVE: usize = 32;

/// Refusals at once per address (so one address cannot take the whole reserve).
pub const RESERVE_PER_ADDRESS: usize = 4;

/// Idle connections told to close whose sockets are not closed yet, beyond which no new
/// connection is accepted until some have closed ([`Admission::room_to_evict`]; a newcomer
/// waits in the listen queue meanwhile): bounds descriptors under a flood of new connections.
pub const EVICTION_SLACK: usize = 64;

/// Longest wait of [`Admission::room_to_evict`]; past it newcomers are refused instead.
pub const EVICTION_WAIT: Duration = Duration::from_millis(250);

/// The caps (`MYMCP_MAX_CONNECTIONS`, `MYMCP_MAX_CONNECTIONS_PER_IP`) and who is exempt from
/// the per-address one.
#[derive(Clone, Debug)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub max_per_address: usize,
    /// Reverse proxies: only the global cap applies to their connections.
    pub exempt: TrustedProxies,
}

/// Default `MYMCP_MAX_CONNECTIONS`.
pub const DEFAULT_MAX_CONNECTIONS: usize = mymcp_settings::MAX_CONNECTIONS.default() as usize;
/// Default `MYMCP_MAX_CONNECTIONS_PER_IP`.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize =
    mymcp_settings::MAX_CONNECTIONS_PER_IP.default() as usize;

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_per_address: DEFAULT_MAX_CONNECTIONS_PER_IP,
            exempt: TrustedProxies::default(),
        }
    }
}

/// What an address is counted as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddressKey {
    V4([u8; 4]),
    /// The /64 prefix.
    V6([u8; 8]),
}

impl AddressKey {
    pub fn of(ip: IpAddr) -> AddressKey {
        match ip.to_canonical() {
            IpAddr::V4(v4) => AddressKey::V4(v4.octets()),
            IpAddr::V6(v6) => {
                let mut prefix = [0u8; 8];
                prefix.copy_from_slice(&v6.octets()[..8]);
                AddressKey::V6(prefix)
            }
        }
    }
}

/// The answer to [`Admission::admit`].
#[derive(Debug)]
pub enum Admitted {
    /// Serve the connection.
    Slot(Slot),
    /// Give it a short refusal (503, or `/health`).
    Refusal(Refusal),
    /// Close it at once.
    Closed,
}

/// How many connections were turned away or closed for newcomers, since the last
/// [`Admission::take_counts`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub evicted: u64,
    pub refused: u64,
    pub closed: u64,
}

/// The slots of all connections.
#[derive(Debug)]
pub struct Admission {
    limits: ConnectionLimits,
    table: Mutex<Table>,
    /// Notified when a connection told to close has closed.
    released: Notify,
}

#[derive(Debug, Default)]
struct Table {
    next: u64,
    /// Slots held, including connections told to close that have not yet closed.
    open: usize,
    /// Connections told to close that have not yet closed.
    evicting: usize,
    refusing: usize,
    connections: HashMap<u64, Entry>,
    /// Idle connections by the time they became idle (oldest first): idle sequence → id.
    idle: BTreeMap<u64, u64>,
    addresses: HashMap<AddressKey, PerAddress>,
    counts: Counts,
}

#[derive(Debug)]
struct Entry {
    key: Option<AddressKey>,
    in_flight: usize,
    /// Its key in `idle` while idle.
    idle_since: Option<u64>,
    eviction: Arc<Eviction>,
}

#[derive(Debug, Default)]
struct PerAddress {
    open: usize,
    refusing: usize,
    /// Idle sequence numbers of this address's idle connections.
    idle: BTreeSet<u64>,
}

impl PerAddress {
    fn is_empty(&self) -> bool {
        self.open == 0 && self.refusing == 0
    }
}

/// Tells a connection to close (it was idle and its slot is needed).
#[derive(Debug, Default)]
pub struct Eviction {
    evicted: AtomicBool,
    notify: Notify,
}

impl Eviction {
    fn fire(&self) {
        self.evicted.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// Whether the connection was told to close.
    pub fn fired(&self) -> bool {
        self.evicted.load(Ordering::SeqCst)
    }

    /// Completes once the connection is told to close.
    pub async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if self.fired() {
                return;
            }
            notified.await;
        }
    }
}

impl Admission {
    pub fn new(limits: ConnectionLimits) -> Arc<Admission> {
        Arc::new(Admission {
            limits,
            table: Mutex::default(),
            released: Notify::new(),
        })
    }

    pub fn limits(&self) -> &ConnectionLimits {
        &self.limits
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for a new connection from `ip`, making room if needed (see the module
    /// documentation). The new connection starts idle.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Admitted {
        let key = (!self.limits.exempt.trusts(ip.to_canonical())).then(|| AddressKey::of(ip));
        let mut t = self.table();
        if let Some(key) = key {
            let (open, oldest) = t
                .addresses
                .get(&key)
                .map_or((0, None), |a| (a.open, a.idle.first().copied()));
            if open >= self.limits.max_per_address {
                match oldest {
                    Some(since) if t.evicting < EVICTION_SLACK => t.evict(since),
                    _ => return self.refuse(&mut t, Some(key)),
                }
            }
        }
        if t.open >= self.limits.max_connections + t.evicting {
            match t.idle.first_key_value() {
                Some((&since, _)) if t.evicting < EVICTION_SLACK => t.evict(since),
                _ => return self.refuse(&mut t, key),
            }
        }
        let id = t.next;
        t.next += 1;
        let since = t.next;
        t.next += 1;
        let eviction = Arc::new(Eviction::default());
        t.open += 1;
        t.idle.insert(since, id);
        if let Some(key) = key {
            let a = t.addresses.entry(key).or_default();
            a.open += 1;
            a.idle.insert(since);
        }
        t.connections.insert(
            id,
            Entry {
                key,
                in_flight: 0,
                idle_since: Some(since),
                eviction: eviction.clone(),
            },
        );
        Admitted::Slot(Slot {
            admission: self.clone(),
            id,
            eviction,
        })
    }

    /// A place in the reserve for a refusal, if there is one (for `key`'s address; a trusted
    /// proxy, `None`, only needs one in all).
    fn refuse(self: &Arc<Self>, t: &mut Table, key: Option<AddressKey>) -> Admitted {
        let full = t.refusing >= RESERVE
            || key.is_some_and(|k| {
                t.addresses
                    .get(&k)
                    .is_some_and(|a| a.refusing >= RESERVE_PER_ADDRESS)
            });
        if full {
            t.counts.closed += 1;
            return Admitted::Closed;
        }
        if let Some(k) = key {
            t.addresses.entry(k).or_default().refusing += 1;
        }
        t.refusing += 1;
        t.counts.refused += 1;
        Admitted::Refusal(Refusal {
            admission: self.clone(),
            key,
        })
    }

    /// Waits (at most [`EVICTION_WAIT`]) while [`EVICTION_SLACK`] connections told to close
    /// have not closed yet, so that the accept loop goes no faster than room is made.
    pub async fn room_to_evict(&self) {
        let give_up = tokio::time::Instant::now() + EVICTION_WAIT;
        loop {
            let released = self.released.notified();
            let mut released = std::pin::pin!(released);
            released.as_mut().enable();
            if self.table().evicting < EVICTION_SLACK {
                return;
            }
            if tokio::time::timeout_at(give_up, released).await.is_err() {
                return;
            }
        }
    }

    /// The counts since the last call, reset.
    pub fn take_counts(&self) -> Counts {
        std::mem::take(&mut self.table().counts)
    }

    /// Connections holding a slot now.
    pub fn open(&self) -> usize {
        self.table().open
    }
}

impl Table {
    /// Tells the connection idle since `since` to close; it stays counted until it has.
    fn evict(&mut self, since: u64) {
        let Some(id) = self.idle.remove(&since) else {
            return;
        };
        let Some(entry) = self.connections.get_mut(&id) else {
            return;
        };
        entry.idle_since = None;
        if let Some(a) = entry.key.and_then(|k| self.addresses.get_mut(&k)) {
            a.idle.remove(&since);
        }
        entry.eviction.fire();
        self.evicting += 1;
        self.counts.evicted += 1;
    }

    fn set_idle(&mut self, id: u64) {
        let since = self.next;
        self.next += 1;
        let Some(entry) = self.connections.get_mut(&id) else {
            return;
        };
        if entry.eviction.fired() || entry.idle_since.is_some() {
            return;
        }
        entry.idle_since = Some(since);
        self.idle.insert(since, id);
        if let Some(a) = entry.key.and_then(|k| self.addresses.get_mut(&k)) {
            a.idle.insert(since);
        }
    }

    fn set_busy(&mut self, id: u64) {
        let Some(entry) = self.connections.get_mut(&id) else {
            return;
        };
        if let Some(since) = entry.idle_since.take() {
            self.idle.remove(&since);
            if let Some(a) = entry.key.and_then(|k| self.addresses.get_mut(&k)) {
                a.idle.remove(&since);
            }
        }
    }
}

/// A connection's place among the open ones; released when dropped.
#[derive(Debug)]
pub struct Slot {
    admission: Arc<Admission>,
    id: u64,
    eviction: Arc<Eviction>,
}

impl Slot {
    /// Marks a request in flight until the guard is dropped; the connection is not closed to
    /// make room meanwhile.
    pub fn busy(self: &Arc<Self>) -> Busy {
        let mut t = self.admission.table();
        if let Some(entry) = t.connections.get_mut(&self.id) {
            entry.in_flight += 1;
            if entry.in_flight == 1 {
                t.set_busy(self.id);
            }
        }
        Busy { slot: self.clone() }
    }

    /// Whether the connection was told to close to make room.
    pub fn evicted(&self) -> bool {
        self.eviction.fired()
    }

    /// Completes once the connection is told to close to make room.
    pub async fn eviction(&self) {
        self.eviction.wait().await
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut t = self.admission.table();
        let Some(entry) = t.connections.remove(&self.id) else {
            return;
        };
        t.open -= 1;
        if entry.eviction.fired() {
            t.evicting -= 1;
            self.admission.released.notify_waiters();
        }
        if let Some(since) = entry.idle_since {
            t.idle.remove(&since);
        }
        if let Some(key) = entry.key {
            if let Some(a) = t.addresses.get_mut(&key) {
                a.open -= 1;
                if let Some(since) = entry.idle_since {
                    a.idle.remove(&since);
                }
                if a.is_empty() {
                    t.addresses.remove(&key);
                }
            }
        }
    }
}

/// A request in flight on a connection (see [`Slot::busy`]).
#[derive(Debug)]
pub struct Busy {
    slot: Arc<Slot>,
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut t = self.slot.admission.table();
        if let Some(entry) = t.connections.get_mut(&self.slot.id) {
            entry.in_flight -= 1;
            if entry.in_flight == 0 {
                t.set_idle(self.slot.id);
            }
        }
    }
}

/// A connection being refused; released when dropped.
#[derive(Debug)]
pub struct Refusal {
    admission: Arc<Admission>,
    key: Option<AddressKey>,
}

impl Drop for Refusal {
    fn drop(&mut self) {
        let mut t = self.admission.table();
        t.refusing -= 1;
        let Some(key) = self.key else {
            return;
        };
        if let Some(a) = t.addresses.get_mut(&key) {
            a.refusing -= 1;
            if a.is_empty() {
                t.addresses.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(all: usize, per: usize) -> Arc<Admission> {
        Admission::new(ConnectionLimits {
            max_connections: all,
            max_per_address: per,
            exempt: TrustedProxies::from_list("10.9.9.9").unwrap(),
        })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn slot(a: &Arc<Admission>, from: &str) -> Arc<Slot> {
        match a.admit(ip(from)) {
            Admitted::Slot(s) => Arc::new(s),
            other => panic!("{from}: {other:?}"),
        }
    }

    #[test]
    fn the_per_address_cap_makes_room_from_that_address_oldest_idle_first() {
        let a = limits(100, 2);
        let first = slot(&a, "192.0.2.1");
        let second = slot(&a, "192.0.2.1");
        let other = slot(&a, "192.0.2.2");
        let third = slot(&a, "192.0.2.1");
        assert!(first.evicted() && !second.evicted() && !other.evicted() && !third.evicted());
        // The evicted one counts until it is gone.
        assert_eq!(a.open(), 4);
        drop(first);
        assert_eq!(a.open(), 3);
        assert_eq!(a.take_counts().evicted, 1);
    }

    #[test]
    fn busy_connections_are_never_closed_for_newcomers() {
        let a = limits(100, 2);
        let one = slot(&a, "192.0.2.1");
        let two = slot(&a, "192.0.2.1");
        let (_b1, _b2) = (one.busy(), two.busy());
        assert!(matches!(a.admit(ip("192.0.2.1")), Admitted::Refusal(_)));
        assert!(!one.evicted() && !two.evicted());
        // Another address is not affected.
        let _other = slot(&a, "192.0.2.2");
    }

    #[test]
    fn a_connection_idle_again_is_the_newest_idle() {
        let a = limits(2, 100);
        let one = slot(&a, "192.0.2.1");
        let two = slot(&a, "192.0.2.2");
        drop(one.busy()); // one was busy, so it has been idle for less time than two
        let _three = slot(&a, "192.0.2.3");
        assert!(two.evicted() && !one.evicted());
    }

    #[test]
    fn the_global_cap_refuses_when_all_are_busy_and_the_reserve_is_bounded() {
        let a = limits(2, 100);
        let one = slot(&a, "192.0.2.1");
        let two = slot(&a, "192.0.2.2");
        let (_b1, _b2) = (one.busy(), two.busy());
        let refusals: Vec<Admitted> = (0..RESERVE_PER_ADDRESS + 1)
            .map(|_| a.admit(ip("192.0.2.3")))
            .collect();
        assert!(refusals[..RESERVE_PER_ADDRESS]
            .iter()
            .all(|r| matches!(r, Admitted::Refusal(_))));
        assert!(matches!(refusals[RESERVE_PER_ADDRESS], Admitted::Closed));
        drop(refusals);
        let many: Vec<Admitted> = (0..RESERVE + 1)
            .map(|i| a.admit(ip(&format!("198.51.100.{i}"))))
            .collect();
        assert!(matches!(many[RESERVE], Admitted::Closed));
        let counts = a.take_counts();
        assert_eq!(counts.refused as usize, RESERVE_PER_ADDRESS + RESERVE);
        assert_eq!(counts.closed, 2);
        drop(many);
        assert_eq!(a.table().refusing, 0);
        assert!(a.table().addresses.len() == 2);
    }

    #[test]
    fn evictions_pending_beyond_the_slack_refuse_newcomers() {
        let a = limits(EVICTION_SLACK, 1000);
        let held: Vec<Arc<Slot>> = (0..EVICTION_SLACK)
            .map(|i| slot(&a, &format!("198.51.100.{i}")))
            .collect();
        // Each newcomer evicts one; the evicted ones never close.
        let newcomers: Vec<Admitted> = (0..EVICTION_SLACK)
            .map(|i| a.admit(ip(&format!("203.0.113.{i}"))))
            .collect();
        assert!(newcomers.iter().all(|n| matches!(n, Admitted::Slot(_))));
        assert!(held.iter().all(|s| s.evicted()));
        // Newcomers are idle and evictable, but the slack is used up.
        assert!(matches!(a.admit(ip("203.0.113.200")), Admitted::Refusal(_)));
        drop(held);
        assert!(matches!(a.admit(ip("203.0.113.201")), Admitted::Slot(_)));
    }

    #[test]
    fn trusted_proxies_have_only_the_global_cap() {
        let a = limits(4, 1);
        let proxied: Vec<Arc<Slot>> = (0..3).map(|_| slot(&a, "10.9.9.9")).collect();
        assert!(proxied.iter().all(|s| !s.evicted()));
        let _x = slot(&a, "192.0.2.1");
        // Full: the oldest idle (a proxied one) makes room.
        let _y = slot(&a, "192.0.2.2");
        assert!(proxied[0].evicted());
        // With every connection busy, the proxy's refusals are bounded only by the reserve.
        let _busy: Vec<Busy> = proxied[1..]
            .iter()
            .map(|s| s.busy())
            .chain([_x.busy(), _y.busy()])
            .collect();
        drop(proxied);
        let refusals: Vec<Admitted> = (0..RESERVE_PER_ADDRESS + 2)
            .map(|_| a.admit(ip("10.9.9.9")))
            .collect();
        assert!(refusals.iter().all(|r| matches!(r, Admitted::Refusal(_))));
    }

    #[test]
    fn ipv6_addresses_count_by_64_prefix_and_mapped_v4_as_v4() {
        assert_eq!(
            AddressKey::of(ip("2001:db8:1:2:aaaa::1")),
            AddressKey::of(ip("2001:db8:1:2:bbbb::2"))
        );
        assert_ne!(
            AddressKey::of(ip("2001:db8:1:2::1")),
            AddressKey::of(ip("2001:db8:1:3::1"))
        );
        assert_eq!(
            AddressKey::of(ip("::ffff:192.0.2.1")),
            AddressKey::of(ip("192.0.2.1"))
        );
    }

    #[tokio::test]
    async fn accepting_waits_for_evicted_connections_to_close() {
        let a = limits(EVICTION_SLACK, 1000);
        let held: Vec<Arc<Slot>> = (0..EVICTION_SLACK)
            .map(|i| slot(&a, &format!("198.51.100.{i}")))
            .collect();
        let _newcomers: Vec<Admitted> = (0..EVICTION_SLACK)
            .map(|i| a.admit(ip(&format!("203.0.113.{i}"))))
            .collect();
        let waiting = {
            let a = a.clone();
            tokio::spawn(async move { a.room_to_evict().await })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(held);
        tokio::time::timeout(std::time::Duration::from_millis(200), waiting)
            .await
            .expect("released before the wait gave up")
            .unwrap();
    }

    #[tokio::test]
    async fn eviction_wakes_a_waiting_connection() {
        let a = limits(1, 10);
        let one = slot(&a, "192.0.2.1");
        let waiting = {
            let one = one.clone();
            tokio::spawn(async move { one.eviction().await })
        };
        tokio::task::yield_now().await;
        let _two = slot(&a, "192.0.2.2");
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("woken")
            .unwrap();
    }
}
