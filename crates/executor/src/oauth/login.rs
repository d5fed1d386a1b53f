//! The consent page's password login (`MYMCP_OAUTH_PAM`): a member of
//! `MYMCP_OAUTH_PAM_GROUP` approves a waiting request with the Unix password of the account the
//! grant will act as.
//!
//! - **Who**: members of the group only (primary or supplementary, through NSS). A non-member,
//!   an unknown account, a wrong password and an account PAM refuses (expired, locked) all get
//!   the same answer on the page ([`NOTICE_REFUSED`]), no sooner than [`REFUSAL_FLOOR`] after
//!   the login began, so neither the text nor the time tells them apart.
//! - **Limits** ([`Limiter`]): [`ACCOUNT_FAILURES`] failures per account and
//!   [`ADDRESS_FAILURES`] per client address (an IPv6 address counts by its /64) within
//!   [`WINDOW`]; then logins of that account or from that address are refused without running
//!   PAM, the right password included, until the oldest failure is [`WINDOW`] old. At most
//!   [`MAX_RUNNING`] checks run at once. The tables hold at most [`MAX_TRACKED`] accounts and
//!   addresses each; when one is full of live failures, logins are refused until entries
//!   expire (the approval by code keeps working).
//! - **PAM in a helper** ([`Helper`]): the executor's own binary, executed again with
//!   [`HELPER_ARG`] per login; the password goes through its stdin ([`HelperRequest`]), never
//!   its arguments or environment. A helper that has not answered within [`HELPER_TIMEOUT`] is
//!   killed with its process group. A crash or a hang of a PAM module ends only the helper.

use mymcp_sys::pam::{wipe, wipe_string};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures of one account within [`WINDOW`] after which its logins are refused.
pub(crate) const ACCOUNT_FAILURES: usize = 5;
/// Failures from one client address within [`WINDOW`] after which its logins are refused.
pub(crate) const ADDRESS_FAILURES: usize = 20;
/// How long a failure counts.
pub(crate) const WINDOW: Duration = Duration::from_secs(15 * 60);
/// PAM checks running at once, at most.
pub(crate) const MAX_RUNNING: usize = 4;
/// Accounts, and addresses, whose failures are tracked at most.
pub(crate) const MAX_TRACKED: usize = 4096;
/// How long the helper may take.
pub(crate) const HELPER_TIMEOUT: Duration = Duration::from_secs(10);
/// A refused login is answered no sooner than this after it began (`pam_unix` itself waits
/// about 2 s after a wrong password; a non-member is not checked by PAM at all).
pub(crate) const REFUSAL_FLOOR: Duration = Duration::from_secs(3);
/// The executor's argument that makes it the helper.
pub(crate) const HELPER_ARG: &str = "--oauth-pam-helper";

/// What the page says after any refused login.
pub(crate) const NOTICE_REFUSED: &str =
    "Wrong account or password, or this account may not approve.";

/// The login as configured (`MYMCP_OAUTH_PAM_SERVICE`, `MYMCP_OAUTH_PAM_GROUP`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PamConfig {
    pub(crate) service: String,
    pub(crate) group: String,
}

// Limits ---------------------------------------------------------------------------------------

/// Why a login is refused before PAM runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Limited {
    /// Too many failures of this account; the wait until one expires.
    Account(Duration),
    /// Too many failures from this address.
    Address(Duration),
    /// [`MAX_RUNNING`] checks run.
    Busy,
    /// The tables are full of live failures.
    Full,
}

impl Limited {
    /// The page's notice.
    pub(crate) fn notice(self) -> String {
        let wait = |d: Duration| d.as_secs().div_ceil(60).max(1);
        match self {
            Limited::Account(d) | Limited::Address(d) => format!(
                "Too many failed logins. Wait {} minute(s) before trying again, or approve on the host with the code.",
                wait(d)
            ),
            Limited::Busy => "Other logins are being checked. Wait a moment, then try again.".into(),
            Limited::Full => "Too many failed logins. Wait a few minutes before trying again, or approve on the host with the code.".into(),
        }
    }

    /// For the audit record.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Limited::Account(_) => "too many failures of this account",
            Limited::Address(_) => "too many failures from this address",
            Limited::Busy => "too many logins being checked",
            Limited::Full => "the failure tables are full",
        }
    }
}

/// Recent failures by key, each key's at most as many as its limit.
#[derive(Debug, Default)]
struct Failures {
    by_key: HashMap<String, VecDeque<Instant>>,
}

impl Failures {
    fn expire(&mut self, now: Instant) {
        self.by_key.retain(|_, times| {
            while times.front().is_some_and(|t| now >= *t + WINDOW) {
                times.pop_front();
            }
            !times.is_empty()
        });
    }

    /// The wait until `key` may try again, if it has reached `limit`.
    fn blocked(&self, key: &str, limit: usize, now: Instant) -> Option<Duration> {
        let times = self.by_key.get(key)?;
        (times.len() >= limit).then(|| (times[0] + WINDOW).saturating_duration_since(now))
    }

    fn full(&self, key: &str) -> bool {
        self.by_key.len() >= MAX_TRACKED && !self.by_key.contains_key(key)
    }

    fn add(&mut self, key: &str, limit: usize, now: Instant) {
        if self.full(key) {
            return;
        }
        let times = self.by_key.entry(key.to_owned()).or_default();
        times.push_back(now);
        while times.len() > limit {
            times.pop_front();
        }
    }
}

#[derive(Debug, Default)]
struct LimiterInner {
    accounts: Failures,
    addresses: Failures,
    running: usize,
}

/// The login's rate limits (see the module documentation).
#[derive(Debug, Default)]
pub(crate) struct Limiter {
    inner: Mutex<LimiterInner>,
}

/// A check may run; one fewer may while this lives.
#[derive(Debug)]
pub(crate) struct Permit<'a> {
    limiter: &'a Limiter,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.limiter.lock().running -= 1;
    }
}

/// The key a client address counts under: an IPv6 address by its /64 (one host usually has
/// a whole /64), anything else as it is.
pub(crate) fn address_key(peer: &str) -> String {
    match peer.parse::<IpAddr>() {
        Ok(IpAddr::V6(a)) if a.to_ipv4_mapped().is_none() => {
            let s = a.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Ok(IpAddr::V6(a)) => a
            .to_ipv4_mapped()
            .map(|v4| v4.to_string())
            .unwrap_or_default(),
        Ok(IpAddr::V4(a)) => a.to_string(),
        Err(_) => peer.to_owned(),
    }
}

impl Limiter {
    fn lock(&self) -> std::sync::MutexGuard<'_, LimiterInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A login of `user` from `peer` may run PAM now, or why not.
    pub(crate) fn admit(
        &self,
        user: &str,
        peer: &str,
        now: Instant,
    ) -> Result<Permit<'_>, Limited> {
        let address = address_key(peer);
        let mut inner = self.lock();
        inner.accounts.expire(now);
        inner.addresses.expire(now);
        if let Some(wait) = inner.accounts.blocked(user, ACCOUNT_FAILURES, now) {
            return Err(Limited::Account(wait));
        }
        if let Some(wait) = inner.addresses.blocked(&address, ADDRESS_FAILURES, now) {
            return Err(Limited::Address(wait));
        }
        if inner.accounts.full(user) || inner.addresses.full(&address) {
            return Err(Limited::Full);
        }
        if inner.running >= MAX_RUNNING {
            return Err(Limited::Busy);
        }
        inner.running += 1;
        Ok(Permit { limiter: self })
    }

    /// A login of `user` from `peer` failed at `now`.
    pub(crate) fn failed(&self, user: &str, peer: &str, now: Instant) {
        let address = address_key(peer);
        let mut inner = self.lock();
        inner.accounts.expire(now);
        inner.addresses.expire(now);
        inner.accounts.add(user, ACCOUNT_FAILURES, now);
        inner.addresses.add(&address, ADDRESS_FAILURES, now);
    }

    /// `user` logged in: the account's failures are forgotten (the address's are not).
    pub(crate) fn succeeded(&self, user: &str) {
        self.lock().accounts.by_key.remove(user);
    }
}

// Who may log in -------------------------------------------------------------------------------

/// Whether `user` may approve with a password: a member of `group` (primary or
/// supplementary, through NSS).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Eligible {
    Member {
        uid: u32,
    },
    NotMember,
    NoSuchAccount,
    NoSuchGroup,
    /// NSS could not answer.
    Unknown(String),
}

/// Looks `user` and `group` up (blocking: NSS may ask a directory service).
pub(crate) fn eligible(user: &str, group: &str) -> Eligible {
    if !mymcp_tokens::valid_user(user) {
        return Eligible::NoSuchAccount;
    }
    let gid = match mymcp_sys::group_by_name(group) {
        Ok(Some(gid)) => gid,
        Ok(None) => return Eligible::NoSuchGroup,
        Err(e) => return Eligible::Unknown(format!("group {group}: {e}")),
    };
    let account = match mymcp_sys::user_by_name(user) {
        Ok(Some(a)) => a,
        Ok(None) => return Eligible::NoSuchAccount,
        Err(e) => return Eligible::Unknown(format!("account: {e}")),
    };
    match mymcp_sys::creds::groups_of(&account.name, account.gid) {
        Ok(groups) if account.gid == gid || groups.contains(&gid) => {
            Eligible::Member { uid: account.uid }
        }
        Ok(_) => Eligible::NotMember,
        Err(e) => Eligible::Unknown(format!("groups: {e}")),
    }
}

// The helper's protocol ------------------------------------------------------------------------

/// The first field of a request.
const MAGIC: &[u8] = b"mymcp-pam-1";
/// Longest request (the fields are bounded far below).
const MAX_REQUEST: usize = 4096;
/// Longest answer read from the helper.
const MAX_ANSWER: u64 = 1024;

/// What the helper is asked: NUL-separated fields on its stdin (none can hold a NUL, as PAM
/// takes C strings).
#[derive(PartialEq, Eq)]
pub(crate) struct HelperRequest {
    pub(crate) service: String,
    pub(crate) user: String,
    pub(crate) rhost: String,
    pub(crate) password: Vec<u8>,
}

impl std::fmt::Debug for HelperRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HelperRequest")
            .field("service", &self.service)
            .field("user", &self.user)
            .field("rhost", &self.rhost)
            .finish_non_exhaustive()
    }
}

impl Drop for HelperRequest {
    fn drop(&mut self) {
        wipe(&mut self.password);
    }
}

impl HelperRequest {
    /// The bytes for the helper's stdin (overwrite them after use); `None` if a field holds
    /// a NUL or the whole is too long.
    pub(crate) fn encode(&self) -> Option<Vec<u8>> {
        let fields: [&[u8]; 5] = [
            MAGIC,
            self.service.as_bytes(),
            self.user.as_bytes(),
            self.rhost.as_bytes(),
            &self.password,
        ];
        let len: usize = fields.iter().map(|f| f.len() + 1).sum();
        if len > MAX_REQUEST || fields.iter().any(|f| f.contains(&0)) {
            return None;
        }
        let mut out = Vec::with_capacity(len);
        for f in fields {
            out.extend_from_slice(f);
            out.push(0);
        }
        Some(out)
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<HelperRequest, &'static str> {
        if bytes.len() > MAX_REQUEST {
            return Err("request too long");
        }
        let body = bytes.strip_suffix(&[0]).ok_or("request not terminated")?;
        let fields: Vec<&[u8]> = body.split(|b| *b == 0).collect();
        let [magic, service, user, rhost, password] = fields[..] else {
            return Err("not five fields");
        };
        if magic != MAGIC {
            return Err("not a request of this version");
        }
        let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| "a field is not UTF-8");
        Ok(HelperRequest {
            service: text(service)?,
            user: text(user)?,
            rhost: text(rhost)?,
            password: password.to_vec(),
        })
    }
}

/// What a login check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Checked {
    /// The password is right and PAM lets the account in now.
    Accepted { uid: u32 },
    /// Refused (why, for the audit record; the page says only [`NOTICE_REFUSED`]).
    Refused(String),
    /// The check could not be made (the helper crashed, hung or answered nonsense).
    Failed(String),
}

/// One line, without control characters.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The helper's answer to a PAM verdict: `accepted`, `refused <step> <code> <text>`, or
/// `error <text>`.
pub(crate) fn answer(verdict: &std::io::Result<mymcp_sys::pam::Verdict>) -> String {
    use mymcp_sys::pam::Verdict;
    match verdict {
        Ok(Verdict::Accepted) => "accepted\n".into(),
        Ok(Verdict::Refused { step, code, text }) => {
            format!("refused {step} {code} {}\n", one_line(text))
        }
        Err(e) => format!("error {}\n", one_line(&e.to_string())),
    }
}

/// Reads the helper's answer; anything else is a failure.
pub(crate) fn parse_answer(out: &[u8], uid: u32) -> Checked {
    let text = String::from_utf8_lossy(out);
    let Some(line) = text.strip_suffix('\n').filter(|l| !l.contains('\n')) else {
        return Checked::Failed(format!("the PAM helper answered {:?}", one_line(&text)));
    };
    match line.split_once(' ') {
        None if line == "accepted" => Checked::Accepted { uid },
        Some(("refused", why)) => Checked::Refused(format!("PAM refused: {why}")),
        Some(("error", why)) => Checked::Failed(format!("PAM: {why}")),
        _ => Checked::Failed(format!("the PAM helper answered {:?}", one_line(line))),
    }
}

/// How the helper is started: the executor's own binary with [`HELPER_ARG`] (tests use a
/// script in its place).
#[derive(Clone, Debug)]
pub(crate) struct Helper {
    pub(crate) program: PathBuf,
    pub(crate) args: Vec<String>,
    pub(crate) timeout: Duration,
}

impl Helper {
    /// The executor itself (`/proc/self/exe`: the file it was started from, even if a newer
    /// package has replaced it since).
    pub(crate) fn executor() -> Helper {
        Helper {
            program: "/proc/self/exe".into(),
            args: vec![HELPER_ARG.to_owned()],
            timeout: HELPER_TIMEOUT,
        }
    }

    /// Runs one check in a new helper: the request on its stdin, one line back on its
    /// stdout. `uid` is the account's, for [`Checked::Accepted`].
    pub(crate) async fn check(&self, request: &HelperRequest, uid: u32) -> Checked {
        use std::os::unix::process::CommandExt;
        use std::process::Stdio;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Some(mut input) = request.encode() else {
            return Checked::Refused("a field holds a NUL or is too long".into());
        };
        let mut cmd = std::process::Command::new(&self.program);
        cmd.args(&self.args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0);
        mymcp_sys::privileges::prepare_child_at_exec(&mut cmd);
        let mut cmd = tokio::process::Command::from(cmd);
        cmd.kill_on_drop(true);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                wipe(&mut input);
                return Checked::Failed(format!("cannot start the PAM helper: {e}"));
            }
        };
        let pid = child.id();
        let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            wipe(&mut input);
            return Checked::Failed("the PAM helper has no pipes".into());
        };
        let talk = async {
            let written = stdin.write_all(&input).await;
            drop(stdin);
            let mut out = Vec::new();
            stdout.take(MAX_ANSWER).read_to_end(&mut out).await?;
            written?;
            let status = child.wait().await?;
            Ok::<_, std::io::Error>((out, status))
        };
        let talked = tokio::time::timeout(self.timeout, talk).await;
        wipe(&mut input);
        match talked {
            Ok(Ok((out, status))) if status.success() => parse_answer(&out, uid),
            Ok(Ok((_, status))) => Checked::Failed(format!("the PAM helper ended: {status}")),
            Ok(Err(e)) => Checked::Failed(format!("talking to the PAM helper: {e}")),
            Err(_) => {
                if let Some(pid) = pid {
                    let _ = mymcp_sys::signals::kill_group(pid, libc::SIGKILL);
                }
                let _ = child.kill().await;
                Checked::Failed(format!(
                    "the PAM check took longer than {} s and was stopped",
                    self.timeout.as_secs()
                ))
            }
        }
    }
}

/// The helper's side: one request on stdin, one answer on stdout. Never returns.
pub(crate) fn helper_main() -> ! {
    use std::io::{Read, Write};
    // Its memory holds a password: no core file, no reading it through /proc.
    let _ = mymcp_sys::privileges::forbid_same_user_inspection();
    let mut input = Vec::with_capacity(MAX_REQUEST + 1);
    let read = std::io::stdin()
        .lock()
        .take(MAX_REQUEST as u64 + 1)
        .read_to_end(&mut input);
    let verdict = match read {
        Err(e) => Err(std::io::Error::other(format!("reading the request: {e}"))),
        Ok(_) => match HelperRequest::decode(&input) {
            Err(why) => Err(std::io::Error::other(why)),
            Ok(mut r) => {
                let mut password = std::mem::take(&mut r.password);
                mymcp_sys::pam::authenticate(&r.service, &r.user, &r.rhost, &mut password)
            }
        },
    };
    wipe(&mut input);
    let mut out = std::io::stdout().lock();
    let ok = out
        .write_all(answer(&verdict).as_bytes())
        .and_then(|()| out.flush());
    std::process::exit(if ok.is_ok() { 0 } else { 1 });
}

// The check as the server runs it ----------------------------------------------------------------

/// One login to check. The password is overwritten when this drops.
pub(crate) struct Attempt {
    pub(crate) user: String,
    pub(crate) peer: String,
    pub(crate) password: String,
}

impl Drop for Attempt {
    fn drop(&mut self) {
        wipe_string(&mut self.password);
    }
}

/// A future a [`Checker`] returns.
pub(crate) type Checking<'a> = Pin<Box<dyn Future<Output = Checked> + Send + 'a>>;

/// Checks logins: [`PamChecker`], or a fake in tests.
pub(crate) trait Checker: Send + Sync {
    fn check(&self, attempt: Attempt) -> Checking<'_>;
}

/// The real check: group membership through NSS, then PAM in a [`Helper`]; a refusal is
/// answered no sooner than [`REFUSAL_FLOOR`] after the check began.
#[derive(Debug)]
pub(crate) struct PamChecker {
    pub(crate) config: PamConfig,
    pub(crate) helper: Helper,
}

impl Checker for PamChecker {
    fn check(&self, attempt: Attempt) -> Checking<'_> {
        Box::pin(async move {
            let began = Instant::now();
            let checked = self.run(attempt).await;
            if !matches!(checked, Checked::Accepted { .. }) {
                tokio::time::sleep(REFUSAL_FLOOR.saturating_sub(began.elapsed())).await;
            }
            checked
        })
    }
}

impl PamChecker {
    async fn run(&self, attempt: Attempt) -> Checked {
        let (user, group) = (attempt.user.clone(), self.config.group.clone());
        let eligible = tokio::task::spawn_blocking(move || eligible(&user, &group))
            .await
            .unwrap_or_else(|e| Eligible::Unknown(e.to_string()));
        let uid = match eligible {
            Eligible::Member { uid } => uid,
            Eligible::NotMember => {
                return Checked::Refused(format!("not a member of {}", self.config.group))
            }
            Eligible::NoSuchAccount => return Checked::Refused("no such account".into()),
            Eligible::NoSuchGroup => {
                return Checked::Refused(format!("the group {} does not exist", self.config.group))
            }
            Eligible::Unknown(e) => return Checked::Failed(format!("looking the account up: {e}")),
        };
        let request = HelperRequest {
            service: self.config.service.clone(),
            user: attempt.user.clone(),
            rhost: attempt.peer.clone(),
            password: attempt.password.as_bytes().to_vec(),
        };
        drop(attempt);
        self.helper.check(&request, uid).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_is_refused_after_its_failures_until_the_oldest_expires() {
        let l = Limiter::default();
        let t0 = Instant::now();
        for i in 0..ACCOUNT_FAILURES {
            drop(l.admit("alice", "192.0.2.1", t0).unwrap());
            l.failed(
                "alice",
                &format!("192.0.2.{}", i + 1),
                t0 + Duration::from_secs(i as u64),
            );
        }
        // The right password is not even tried, from any address.
        match l.admit("alice", "198.51.100.9", t0 + Duration::from_secs(10)) {
            Err(Limited::Account(wait)) => assert_eq!(wait, WINDOW - Duration::from_secs(10)),
            other => panic!("{other:?}"),
        }
        assert!(
            l.admit("bob", "192.0.2.1", t0).is_ok(),
            "another account may"
        );
        assert!(
            l.admit("alice", "192.0.2.1", t0 + WINDOW).is_ok(),
            "the window passed"
        );
    }

    #[test]
    fn an_address_is_refused_after_its_failures_whatever_the_account() {
        let l = Limiter::default();
        let t0 = Instant::now();
        for i in 0..ADDRESS_FAILURES {
            l.failed(&format!("user{i}"), "2001:db8:1:2::7", t0);
        }
        assert!(matches!(
            l.admit("fresh", "2001:db8:1:2::7", t0),
            Err(Limited::Address(_))
        ));
        assert!(
            matches!(
                l.admit("fresh", "2001:db8:1:2:ffff::1", t0),
                Err(Limited::Address(_))
            ),
            "the same /64"
        );
        assert!(l.admit("fresh", "2001:db8:1:3::7", t0).is_ok());
        assert!(l.admit("fresh", "192.0.2.1", t0).is_ok());
    }

    #[test]
    fn a_success_forgets_the_accounts_failures_but_not_the_addresses() {
        let l = Limiter::default();
        let t0 = Instant::now();
        for _ in 0..ACCOUNT_FAILURES - 1 {
            l.failed("alice", "192.0.2.1", t0);
        }
        l.succeeded("alice");
        l.failed("alice", "192.0.2.1", t0);
        assert!(l.admit("alice", "192.0.2.1", t0).is_ok());
        assert_eq!(
            l.lock().addresses.by_key["192.0.2.1"].len(),
            ACCOUNT_FAILURES
        );
    }

    #[test]
    fn checks_at_once_are_bounded_and_released() {
        let l = Limiter::default();
        let now = Instant::now();
        let permits: Vec<_> = (0..MAX_RUNNING)
            .map(|i| l.admit(&format!("u{i}"), "192.0.2.1", now).unwrap())
            .collect();
        assert!(matches!(l.admit("x", "192.0.2.2", now), Err(Limited::Busy)));
        drop(permits);
        assert!(l.admit("x", "192.0.2.2", now).is_ok());
    }

    #[test]
    fn the_tables_are_bounded_and_a_full_table_refuses_newcomers() {
        let l = Limiter::default();
        let now = Instant::now();
        for i in 0..MAX_TRACKED {
            l.failed(
                &format!("u{i}"),
                &format!("10.{}.{}.1", i >> 8, i & 255),
                now,
            );
        }
        l.failed("one-more", "10.200.0.1", now);
        {
            let inner = l.lock();
            assert_eq!(inner.accounts.by_key.len(), MAX_TRACKED);
            assert_eq!(inner.addresses.by_key.len(), MAX_TRACKED);
        }
        assert_eq!(
            l.admit("newcomer", "10.0.0.1", now).unwrap_err(),
            Limited::Full
        );
        assert!(l.admit("u1", "10.0.1.1", now).is_ok(), "tracked ones go on");
        assert!(l.admit("newcomer", "10.0.0.1", now + WINDOW).is_ok());
    }

    #[test]
    fn membership_is_primary_or_supplementary_and_unknowns_are_no_members() {
        // root's primary group is root.
        assert_eq!(eligible("root", "root"), Eligible::Member { uid: 0 });
        let nobody = mymcp_sys::user_by_name("nobody").unwrap().unwrap();
        assert_eq!(eligible("nobody", "root"), Eligible::NotMember);
        // nobody's primary group, by its name.
        let group = std::fs::read_to_string("/etc/group").unwrap();
        let primary = group
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.get(2) == Some(&nobody.gid.to_string().as_str())).then(|| f[0].to_owned())
            })
            .unwrap();
        assert_eq!(
            eligible("nobody", &primary),
            Eligible::Member { uid: nobody.uid }
        );
        // A supplementary group: one that lists a member in /etc/group.
        if let Some((name, member)) = group.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            let member = f.get(3)?.split(',').find(|m| !m.is_empty())?;
            Some((f[0].to_owned(), member.to_owned()))
        }) {
            assert!(
                matches!(eligible(&member, &name), Eligible::Member { .. }),
                "{member} in {name}"
            );
        }
        assert_eq!(
            eligible("no-such-user-mymcp", "root"),
            Eligible::NoSuchAccount
        );
        assert_eq!(eligible("-rf", "root"), Eligible::NoSuchAccount);
        assert_eq!(
            eligible("root", "no-such-group-mymcp"),
            Eligible::NoSuchGroup
        );
    }

    fn request(password: &[u8]) -> HelperRequest {
        HelperRequest {
            service: "mymcp".into(),
            user: "alice".into(),
            rhost: "192.0.2.1".into(),
            password: password.to_vec(),
        }
    }

    #[test]
    fn the_helper_request_round_trips_and_malformed_ones_are_refused() {
        let r = request("pass wörd".as_bytes());
        let bytes = r.encode().unwrap();
        assert_eq!(HelperRequest::decode(&bytes).unwrap(), r);
        assert!(
            !format!("{r:?}").contains("pass"),
            "Debug hides the password"
        );
        assert!(request(b"a\0b").encode().is_none());
        assert!(request(&[b'x'; MAX_REQUEST]).encode().is_none());
        assert!(HelperRequest::decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(HelperRequest::decode(b"mymcp-pam-1\0a\0b\0c\0").is_err());
        assert!(HelperRequest::decode(b"mymcp-pam-0\0a\0b\0c\0d\0").is_err());
        assert!(HelperRequest::decode(b"mymcp-pam-1\0a\0b\0c\0d\0e\0").is_err());
    }

    #[test]
    fn answers_round_trip_and_anything_else_is_a_failure() {
        use mymcp_sys::pam::Verdict;
        let parse = |v: std::io::Result<Verdict>| parse_answer(answer(&v).as_bytes(), 1000);
        assert_eq!(
            parse(Ok(Verdict::Accepted)),
            Checked::Accepted { uid: 1000 }
        );
        let refused = parse(Ok(Verdict::Refused {
            step: "account",
            code: 13,
            text: "User account has expired\n".into(),
        }));
        assert_eq!(
            refused,
            Checked::Refused("PAM refused: account 13 User account has expired ".into())
        );
        assert!(matches!(
            parse(Err(std::io::Error::other("no libpam"))),
            Checked::Failed(_)
        ));
        for junk in [
            &b""[..],
            b"accepted",
            b"accepted\nmore\n",
            b"yes\n",
            b"accepted \n",
        ] {
            assert!(
                matches!(parse_answer(junk, 0), Checked::Failed(_)),
                "{junk:?}"
            );
        }
    }

    fn script(body: &str, timeout: Duration) -> Helper {
        Helper {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), body.into()],
            timeout,
        }
    }

    #[tokio::test]
    async fn the_helper_gets_the_password_on_stdin_and_nothing_in_argv_or_environment() {
        let dir = tempfile::tempdir().unwrap();
        let seen = dir.path().join("seen");
        let body = format!(
            "cat > {0}.in; env > {0}.env; cat /proc/$$/cmdline > {0}.argv; echo accepted",
            seen.display()
        );
        let h = script(&body, Duration::from_secs(10));
        assert_eq!(
            h.check(&request(b"s3cret-pw"), 1234).await,
            Checked::Accepted { uid: 1234 }
        );
        let read = |ext: &str| std::fs::read(seen.with_extension(ext)).unwrap();
        assert_eq!(read("in"), request(b"s3cret-pw").encode().unwrap());
        for ext in ["env", "argv"] {
            let text = String::from_utf8_lossy(&read(ext)).into_owned();
            assert!(!text.contains("s3cret"), "{ext}: {text}");
        }
        let env = String::from_utf8_lossy(&read("env")).into_owned();
        assert!(!env.contains("MYMCP_"), "an empty environment: {env}");
    }

    #[tokio::test]
    async fn a_helper_that_hangs_is_killed_with_its_group_and_one_that_crashes_fails() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        // The helper and a child of its own (as a PAM module might start) hang.
        let body = format!(
            "cat >/dev/null; sleep 60 & echo $! > {}; wait",
            pid_file.display()
        );
        let started = Instant::now();
        let checked = script(&body, Duration::from_millis(500))
            .check(&request(b"pw"), 1)
            .await;
        assert!(
            matches!(&checked, Checked::Failed(why) if why.contains("longer than")),
            "{checked:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        let grandchild: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let gone = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            std::fs::read_to_string(format!("/proc/{grandchild}/stat")).map_or(true, |s| {
                s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
        });
        assert!(gone, "the helper's own child was killed too");

        let crashed = script("cat >/dev/null; kill -SEGV $$", Duration::from_secs(5))
            .check(&request(b"pw"), 1)
            .await;
        assert!(matches!(crashed, Checked::Failed(_)), "{crashed:?}");
        let refused = script(
            "cat >/dev/null; echo 'refused authenticate 7 Authentication failure'",
            Duration::from_secs(5),
        )
        .check(&request(b"pw"), 1)
        .await;
        assert!(matches!(refused, Checked::Refused(_)), "{refused:?}");
    }
}
