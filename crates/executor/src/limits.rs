//! Concurrency limits for commands and for file work, in total and per token.
//!
//! Nothing queues: a command or a file call beyond a limit fails at once with
//! [`ErrorCode::Busy`], so a client (or a runaway agent) can never build an unbounded backlog
//! of processes or blocked threads inside the executor. A slot is held for exactly as long as
//! its work runs and given back on drop.

use mymcp_protocol::{ErrorCode, TokenDigest, ToolFailure};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Counts something per token, up to a maximum each.
#[derive(Debug)]
pub(crate) struct PerToken {
    max: usize,
    counts: Arc<Mutex<HashMap<TokenDigest, usize>>>,
}

impl PerToken {
    pub(crate) fn new(max: usize) -> Self {
        PerToken {
            max,
            counts: Arc::default(),
        }
    }

    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// Takes one of `token`'s slots, or `None` when all are taken.
    pub(crate) fn acquire(&self, token: &TokenDigest) -> Option<TokenSlot> {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let n = counts.entry(*token).or_default();
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(TokenSlot {
            counts: self.counts.clone(),
            token: *token,
        })
    }

    /// Slots of `token` taken right now.
    pub(crate) fn taken(&self, token: &TokenDigest) -> usize {
        let counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts.get(token).copied().unwrap_or(0)
    }
}

/// One taken slot of a [`PerToken`]; given back on drop.
#[derive(Debug)]
pub(crate) struct TokenSlot {
    counts: Arc<Mutex<HashMap<TokenDigest, usize>>>,
    token: TokenDigest,
}

impl Drop for TokenSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = counts.get_mut(&self.token) {
            *n -= 1;
            if *n == 0 {
                // Keeps the map as small as the set of tokens with running commands.
                counts.remove(&self.token);
            }
        }
    }
}

/// The command limits: `MYMCP_BASH_MAX_CONCURRENT` processes trees in total (foreground
/// commands and running background jobs), `MYMCP_BASH_MAX_CONCURRENT_PER_TOKEN` foreground
/// commands per token. Background jobs have their own per-token cap in [`crate::jobs`].
#[derive(Debug)]
pub(crate) struct CommandLimits {
    total: Arc<Semaphore>,
    total_max: usize,
    per_token: PerToken,
}

/// A foreground command's slots; given back on drop.
#[derive(Debug)]
pub(crate) struct CommandSlot {
    _token: TokenSlot,
    _total: OwnedSemaphorePermit,
}

impl CommandLimits {
    pub(crate) fn new(total_max: usize, per_token_max: usize) -> Self {
        CommandLimits {
            total: Arc::new(Semaphore::new(total_max)),
            total_max,
            per_token: PerToken::new(per_token_max),
        }
    }

    /// Slots for a foreground command of `token`: one of its own and one of the total.
    pub(crate) fn foreground(&self, token: &TokenDigest) -> Result<CommandSlot, ToolFailure> {
        let Some(own) = self.per_token.acquire(token) else {
            return Err(ToolFailure::new(
                ErrorCode::Busy,
                format!(
                    "Too many commands are running for this token (limit {}); try again shortly",
                    self.per_token.max()
                ),
            )
            .with_suggestion(
                "Wait for running commands to finish, or start long commands with background: true",
            ));
        };
        Ok(CommandSlot {
            _token: own,
            _total: self.total_slot()?,
        })
    }

    /// A slot of the total, for a background job.
    pub(crate) fn total_slot(&self) -> Result<OwnedSemaphorePermit, ToolFailure> {
        self.total.clone().try_acquire_owned().map_err(|_| {
            ToolFailure::new(
                ErrorCode::Busy,
                format!(
                    "Too many commands are running on this server (limit {}); try again shortly",
                    self.total_max
                ),
            )
            .with_suggestion("Wait for running commands to finish")
        })
    }

    /// Commands and jobs running right now.
    #[cfg(test)]
    pub(crate) fn running(&self) -> usize {
        self.total_max - self.total.available_permits()
    }
}

/// The file-work limits: at most `MYMCP_FILE_MAX_CONCURRENT` file-tool calls and transfers
/// on the blocking pool in total (well below its 512 threads, so that one kind of work can
/// never take all of them), and per token `MYMCP_FILE_MAX_CONCURRENT_PER_TOKEN` file-tool
/// calls plus as many transfers. A file-tool call's slot moves onto the thread that does the
/// work and is given back when that work really ends: a read stuck in the kernel (a hung NFS
/// server, a FUSE daemon that never answers) keeps counting against its token, so a token
/// cannot pile up stuck threads by calling again.
#[derive(Debug)]
pub(crate) struct FileLimits {
    total: Arc<Semaphore>,
    total_max: usize,
    calls: PerToken,
    transfers: PerToken,
}

/// A slot of [`FileLimits`]; given back on drop.
#[derive(Debug)]
pub(crate) struct FileSlot {
    _token: TokenSlot,
    _total: OwnedSemaphorePermit,
}

impl FileLimits {
    pub(crate) fn new(total_max: usize, per_token_max: usize) -> Self {
        FileLimits {
            total: Arc::new(Semaphore::new(total_max)),
            total_max,
            calls: PerToken::new(per_token_max),
            transfers: PerToken::new(per_token_max),
        }
    }

    /// A slot for one file-tool call of `token`.
    pub(crate) fn call(&self, token: &TokenDigest) -> Result<FileSlot, ToolFailure> {
        self.slot(&self.calls, token, "file tool calls")
    }

    /// A slot for one transfer (or `HEAD` probe) of a grant made by `token`.
    pub(crate) fn transfer(&self, token: &TokenDigest) -> Result<FileSlot, ToolFailure> {
        self.slot(&self.transfers, token, "transfers")
    }

    fn slot(
        &self,
        counter: &PerToken,
        token: &TokenDigest,
        what: &str,
    ) -> Result<FileSlot, ToolFailure> {
        let Some(own) = counter.acquire(token) else {
            return Err(ToolFailure::new(
                ErrorCode::Busy,
                format!(
                    "Too many {what} are running for this token (limit {}); try again shortly",
                    counter.max()
                ),
            )
            .with_suggestion("Wait for this token's running calls to finish"));
        };
        let total = self.total.clone().try_acquire_owned().map_err(|_| {
            ToolFailure::new(
                ErrorCode::Busy,
                format!(
                    "Too many file calls and transfers are running on this server (limit {}); try again shortly",
                    self.total_max
                ),
            )
            .with_suggestion("Wait for running calls to finish")
        })?;
        Ok(FileSlot {
            _token: own,
            _total: total,
        })
    }

    /// File-tool calls and transfers holding a slot right now.
    #[cfg(test)]
    pub(crate) fn running(&self) -> usize {
        self.total_max - self.total.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_token_and_total_limits_refuse_without_queueing() {
        let limits = CommandLimits::new(3, 2);
        let (a, b) = (TokenDigest([1; 32]), TokenDigest([2; 32]));
        let a1 = limits.foreground(&a).unwrap();
        let _a2 = limits.foreground(&a).unwrap();
        let e = limits.foreground(&a).unwrap_err();
        assert_eq!(e.code, ErrorCode::Busy);
        assert!(e.message.contains("for this token (limit 2)"), "{e}");
        // Another token still has room, up to the total.
        let _b1 = limits.foreground(&b).unwrap();
        assert_eq!(limits.running(), 3);
        let e = limits.foreground(&b).unwrap_err();
        assert!(e.message.contains("on this server (limit 3)"), "{e}");
        // The failed attempt gave its token slot back.
        assert_eq!(limits.per_token.taken(&b), 1);
        drop(a1);
        assert!(limits.foreground(&a).is_ok());
    }

    #[test]
    fn file_calls_and_transfers_have_a_share_each_per_token_and_one_total() {
        let limits = FileLimits::new(5, 2);
        let (a, b) = (TokenDigest([1; 32]), TokenDigest([2; 32]));
        let c1 = limits.call(&a).unwrap();
        let _c2 = limits.call(&a).unwrap();
        let e = limits.call(&a).unwrap_err();
        assert_eq!(e.code, ErrorCode::Busy);
        assert!(e.message.contains("file tool calls"), "{e}");
        assert!(e.message.contains("for this token (limit 2)"), "{e}");
        // Its transfers have a share of their own.
        let _t1 = limits.transfer(&a).unwrap();
        let _t2 = limits.transfer(&a).unwrap();
        assert!(limits.transfer(&a).is_err());
        // Another token gets what is left of the total.
        let _b1 = limits.call(&b).unwrap();
        assert_eq!(limits.running(), 5);
        let e = limits.call(&b).unwrap_err();
        assert!(e.message.contains("on this server (limit 5)"), "{e}");
        drop(c1);
        let _b2 = limits.call(&b).unwrap();
        assert!(limits.call(&a).is_err(), "b took the place a gave back");
    }

    #[test]
    fn slots_are_given_back_and_the_map_shrinks() {
        let counter = PerToken::new(1);
        let t = TokenDigest([7; 32]);
        let slot = counter.acquire(&t).unwrap();
        assert!(counter.acquire(&t).is_none());
        drop(slot);
        assert_eq!(counter.taken(&t), 0);
        assert!(counter.counts.lock().unwrap().is_empty());
    }
}
