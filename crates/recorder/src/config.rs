//! The recorder's settings: the reference's `MYMCP_RECORDER_*` variables (spec §8, §12) and a
//! few of its own, each validated with a message naming the variable.

use crate::llm::{LlmConfig, Provider};
use crate::probe::ProbeConfig;
use std::path::PathBuf;
use std::time::Duration;

use mymcp_settings as settings;
pub use mymcp_settings::values::{ConfigError, Source};

/// Everything the recorder needs.
#[derive(Clone, Debug)]
pub struct Config {
    /// `MYMCP_RECORDER_ENABLED`: the recorder refuses to run unless it is true.
    pub enabled: bool,
    pub data_dir: PathBuf,
    /// `MYMCP_AUDIT_LOG_DIR`: the audit log the recorder follows.
    pub audit_dir: PathBuf,
    pub merge_interval: Duration,
    /// Events per merge call at most.
    pub max_events: usize,
    pub bootstrap_max_iterations: u32,
    /// Tokens (input and output) one bootstrap may spend.
    pub bootstrap_token_budget: u64,
    /// Wait after a failed bootstrap.
    pub bootstrap_retry_interval: Duration,
    pub probe: ProbeConfig,
    pub llm: LlmConfig,
    /// Consecutive failures that open the circuit breaker.
    pub breaker_threshold: u32,
    /// Waits after a failed merge: doubling from `backoff_min` up to `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Where the metrics text file goes.
    pub metrics_file: PathBuf,
}

impl Config {
    /// Reads the settings from `src` (the env file's values under the process
    /// environment's). The API key is `MYMCP_RECORDER_LLM_API_KEY`, else the provider's own
    /// variable (`ANTHROPIC_API_KEY`, `OPENAI_API_KEY`), else the systemd credential
    /// `llm-api-key` (`$CREDENTIALS_DIRECTORY/llm-api-key`).
    pub fn from_source(src: &dyn Source) -> Result<Config, ConfigError> {
        let provider = settings::RECORDER_LLM_PROVIDER.read(src)?;
        let provider = Provider::parse(provider).expect("the declaration allows only providers");
        let base_override = settings::RECORDER_LLM_BASE_URL
            .value(src)
            .map(|v| v.trim_end_matches('/').to_owned())
            .filter(|v| !v.is_empty());
        if let Some(b) = &base_override {
            if !(b.starts_with("https://") || b.starts_with("http://")) {
                return Err(
                    settings::RECORDER_LLM_BASE_URL.error(format!("{b} is not an http(s) URL"))
                );
            }
        }
        // Set, even empty, the generic key hides the provider's variable.
        let api_key = settings::RECORDER_LLM_API_KEY
            .raw(src)
            .or_else(|| src.get(provider.key_variable()))
            .or_else(|| {
                let dir = src.get("CREDENTIALS_DIRECTORY")?;
                std::fs::read_to_string(PathBuf::from(dir).join("llm-api-key")).ok()
            })
            .map(|k| k.trim().to_owned())
            .unwrap_or_default();
        let model = settings::RECORDER_LLM_MODEL
            .value(src)
            .unwrap_or_else(|| provider.default_model().to_owned());
        let llm = LlmConfig {
            provider,
            model,
            api_key,
            base_url: base_override
                .clone()
                .unwrap_or_else(|| provider.default_base_url().to_owned()),
            max_tokens: settings::RECORDER_LLM_MAX_TOKENS.read(src)? as u32,
            timeout: Duration::from_secs(settings::RECORDER_LLM_TIMEOUT_SEC.read(src)?),
        };
        let data_dir = settings::RECORDER_DATA_DIR.read(src)?;
        let backoff_min = settings::RECORDER_BACKOFF_MIN_SEC.read(src)?;
        let backoff_max = settings::RECORDER_BACKOFF_MAX_SEC.read_within(
            src,
            backoff_min,
            settings::RECORDER_BACKOFF_MAX_SEC.kind.max,
        )?;
        let cfg = Config {
            enabled: settings::RECORDER_ENABLED.read(src)?,
            audit_dir: settings::AUDIT_LOG_DIR.read(src)?,
            // Like the executor: a merge interval that is not positive means the default.
            merge_interval: Duration::from_secs(settings::RECORDER_MERGE_INTERVAL_SEC.read(src)?),
            max_events: settings::RECORDER_MAX_EVENTS_PER_CYCLE.read(src)? as usize,
            bootstrap_max_iterations: settings::RECORDER_BOOTSTRAP_MAX_ITERATIONS.read(src)? as u32,
            bootstrap_token_budget: settings::RECORDER_BOOTSTRAP_TOKEN_BUDGET.read(src)?,
            bootstrap_retry_interval: Duration::from_secs(
                settings::RECORDER_BOOTSTRAP_RETRY_INTERVAL_SEC.read(src)?,
            ),
            probe: ProbeConfig {
                timeout: Duration::from_secs(
                    settings::RECORDER_BOOTSTRAP_PROBE_TIMEOUT_SEC.read(src)?,
                ),
                ..ProbeConfig::default()
            },
            llm,
            breaker_threshold: settings::RECORDER_CIRCUIT_BREAKER_THRESHOLD.read(src)? as u32,
            backoff_min: Duration::from_secs(backoff_min),
            backoff_max: Duration::from_secs(backoff_max),
            metrics_file: settings::RECORDER_METRICS_FILE
                .read_or(src, &data_dir.join("metrics.prom").display().to_string())?,
            data_dir,
        };
        if cfg.llm.api_key.is_empty() && base_override.is_none() {
            return Err(settings::RECORDER_LLM_API_KEY.error(format!(
                "not set (nor {}, nor the credential llm-api-key); only a {} server may go without one",
                provider.key_variable(),
                settings::RECORDER_LLM_BASE_URL.name
            )));
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_source(&m)
    }

    #[test]
    fn defaults_are_the_references() {
        let c = from(&[("ANTHROPIC_API_KEY", "k")]).unwrap();
        assert!(!c.enabled);
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/mymcp/recorder"));
        assert_eq!(c.audit_dir, PathBuf::from("/var/log/mymcp"));
        assert_eq!(c.merge_interval, Duration::from_secs(300));
        assert_eq!(c.max_events, 50);
        assert_eq!(c.bootstrap_max_iterations, 200);
        assert_eq!(c.bootstrap_token_budget, 10_000_000);
        assert_eq!(c.probe.timeout, Duration::from_secs(30));
        assert_eq!(c.bootstrap_retry_interval, Duration::from_secs(3600));
        assert_eq!(c.llm.provider, Provider::Anthropic);
        assert_eq!(c.llm.model, "claude-sonnet-4-6");
        assert_eq!(c.llm.base_url, "https://api.anthropic.com");
        assert_eq!(c.llm.max_tokens, 32_768);
        assert_eq!(c.llm.api_key, "k");
        assert_eq!(c.breaker_threshold, 5);
        assert_eq!(
            (c.backoff_min.as_secs(), c.backoff_max.as_secs()),
            (30, 600)
        );
        assert_eq!(
            c.metrics_file,
            PathBuf::from("/var/lib/mymcp/recorder/metrics.prom")
        );
    }

    #[test]
    fn the_declared_providers_are_the_recorder_s() {
        for name in settings::RECORDER_LLM_PROVIDER.kind.allowed {
            assert_eq!(Provider::parse(name).map(Provider::as_str), Some(*name));
        }
        assert_eq!(
            Provider::parse(settings::RECORDER_LLM_PROVIDER.default()),
            Some(Provider::Anthropic)
        );
    }

    #[test]
    fn openai_compatible_endpoints_and_their_key() {
        let c = from(&[
            ("MYMCP_RECORDER_LLM_PROVIDER", "OpenAI"),
            ("OPENAI_API_KEY", "o"),
            (
                "MYMCP_RECORDER_LLM_BASE_URL",
                "https://api.deepseek.com/v1/",
            ),
            ("MYMCP_RECORDER_LLM_MODEL", "deepseek-chat"),
            ("MYMCP_RECORDER_MERGE_INTERVAL_SEC", "-1"),
        ])
        .unwrap();
        assert_eq!(c.llm.provider, Provider::OpenAi);
        assert_eq!(c.llm.base_url, "https://api.deepseek.com/v1");
        assert_eq!(c.llm.model, "deepseek-chat");
        assert_eq!(c.llm.api_key, "o");
        assert_eq!(c.merge_interval, Duration::from_secs(300));
        // The generic key wins over the provider's.
        let c = from(&[
            ("MYMCP_RECORDER_LLM_PROVIDER", "openai"),
            ("OPENAI_API_KEY", "o"),
            ("MYMCP_RECORDER_LLM_API_KEY", "g"),
        ])
        .unwrap();
        assert_eq!(c.llm.api_key, "g");
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (pairs, name) in [
            (
                vec![("MYMCP_RECORDER_LLM_PROVIDER", "gemini")],
                "MYMCP_RECORDER_LLM_PROVIDER",
            ),
            (vec![], "MYMCP_RECORDER_LLM_API_KEY"),
            (
                vec![("MYMCP_RECORDER_ENABLED", "maybe")],
                "MYMCP_RECORDER_ENABLED",
            ),
            (
                vec![("MYMCP_RECORDER_MAX_EVENTS_PER_CYCLE", "0")],
                "MYMCP_RECORDER_MAX_EVENTS_PER_CYCLE",
            ),
            (
                vec![("MYMCP_RECORDER_DATA_DIR", "rel")],
                "MYMCP_RECORDER_DATA_DIR",
            ),
            (
                vec![("MYMCP_RECORDER_LLM_BASE_URL", "ftp://x")],
                "MYMCP_RECORDER_LLM_BASE_URL",
            ),
            (
                vec![("MYMCP_RECORDER_MERGE_INTERVAL_SEC", "x")],
                "MYMCP_RECORDER_MERGE_INTERVAL_SEC",
            ),
        ] {
            let mut pairs = pairs;
            if name != "MYMCP_RECORDER_LLM_API_KEY" {
                pairs.push(("ANTHROPIC_API_KEY", "k"));
            }
            let e = from(&pairs).unwrap_err();
            assert_eq!(e.name, name, "{e}");
        }
        // A local server needs no key.
        assert!(from(&[("MYMCP_RECORDER_LLM_BASE_URL", "http://127.0.0.1:9")]).is_ok());
    }
}
