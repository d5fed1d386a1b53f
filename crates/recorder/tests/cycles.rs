//! The recorder driven by a fake LLM on loopback, in both provider dialects: bootstrap and merge
//! cycles change the overview and the changelog as expected; 500s, timeouts, malformed,
//! truncated and max-tokens answers roll the cursor back, halve the batch, back off and open the
//! circuit breaker; rotations of the audit log between cycles lose and repeat nothing.
//!
//! The audit log is written by the real writer (`mymcp_audit::log::AuditLog`: chain, rotation),
//! exactly as the executor writes it.

mod support;

use mymcp_audit::log::{AuditLog, LogConfig};
use mymcp_recorder::config::Config;
use mymcp_recorder::llm::Provider;
use mymcp_recorder::merge::{Outcome, Recorder};
use mymcp_recorder::metrics::Metrics;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{echo_merge, max_tokens, tool_call, FakeLlm, Scripted};

fn random(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

struct Host {
    dir: tempfile::TempDir,
    llm: FakeLlm,
    provider: Provider,
    log: AuditLog,
    metrics: Arc<Metrics>,
    written: usize,
}

impl Host {
    /// A host whose audit log rotates at `max_bytes`, keeping `backups` old files.
    fn new(provider: Provider, max_bytes: u64, backups: u32) -> Host {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(
            LogConfig {
                dir: dir.path().join("audit"),
                key_file: dir.path().join("state/audit/signing.key"),
                max_bytes,
                backup_count: backups,
                seal_records: 1_000_000,
                seal_interval: Duration::from_secs(3600),
            },
            random,
        )
        .unwrap()
        .log;
        Host {
            dir,
            llm: FakeLlm::start(),
            provider,
            log,
            metrics: Arc::new(Metrics::default()),
            written: 0,
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("recorder")
    }

    fn config(&self, extra: &[(&str, &str)]) -> Config {
        let mut m: HashMap<String, String> = [
            ("MYMCP_RECORDER_ENABLED", "true".to_owned()),
            ("MYMCP_RECORDER_DATA_DIR", self.data().display().to_string()),
            (
                "MYMCP_AUDIT_LOG_DIR",
                self.dir.path().join("audit").display().to_string(),
            ),
            (
                "MYMCP_RECORDER_LLM_PROVIDER",
                self.provider.as_str().to_owned(),
            ),
            ("MYMCP_RECORDER_LLM_BASE_URL", self.llm.url.clone()),
            ("MYMCP_RECORDER_LLM_API_KEY", "test-key".to_owned()),
            ("MYMCP_RECORDER_LLM_TIMEOUT_SEC", "1".to_owned()),
            ("MYMCP_RECORDER_MAX_EVENTS_PER_CYCLE", "4".to_owned()),
            ("MYMCP_RECORDER_CIRCUIT_BREAKER_THRESHOLD", "3".to_owned()),
            ("MYMCP_RECORDER_BOOTSTRAP_PROBE_TIMEOUT_SEC", "5".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        for (k, v) in extra {
            m.insert(k.to_string(), v.to_string());
        }
        Config::from_source(&m).unwrap()
    }

    fn recorder(&self, extra: &[(&str, &str)]) -> Recorder {
        Recorder::new(
            self.config(extra),
            self.metrics.clone(),
            "Host overview: test".into(),
        )
        .unwrap()
    }

    /// Appends a record as the executor writes it; returns the path it names.
    fn record(&mut self, tool: &str, result: &str) -> String {
        self.written += 1;
        let path = format!("/srv/file-{:04}", self.written);
        let body = json!({
            "ts": "2026-11-21T18:00:00.000000Z", "token_name": "laptop", "role": "rw",
            "ip": "127.0.0.1", "tool": tool, "params": {"file_path": path, "content": "<3 chars>"},
            "result": result, "request_id": "r", "duration_ms": 1,
            "output": {"path": path, "size_bytes": 3}
        });
        self.log.append(&body.to_string()).unwrap();
        path
    }

    /// A `start` record then the outcome, as for a tool with side effects.
    fn change(&mut self) -> String {
        let start = json!({"ts": "t", "type": "start", "token_name": "laptop", "role": "rw",
            "ip": "127.0.0.1", "tool": "write_file", "params": {}, "request_id": "r"});
        self.log.append(&start.to_string()).unwrap();
        self.record("write_file", "ok")
    }

    fn overview(&self) -> String {
        std::fs::read_to_string(self.data().join("overview/overview.md")).unwrap()
    }

    fn changelog(&self) -> String {
        std::fs::read_to_string(self.data().join("overview/changelog.md")).unwrap_or_default()
    }

    /// Skips the bootstrap: an overview exists and the cursor is at the start of the log.
    fn with_overview(&self) {
        std::fs::create_dir_all(self.data().join("overview")).unwrap();
        std::fs::write(
            self.data().join("overview/overview.md"),
            "# Host overview: test\n\n_Last updated: 2026-11-21T17:00:00Z_\n\n## TL;DR\n\nA test host.\n\n## Data Locations\n\nnone\n",
        )
        .unwrap();
    }

    fn cursor(&self) -> Value {
        serde_json::from_str(&std::fs::read_to_string(self.data().join("cursor.json")).unwrap())
            .unwrap()
    }
}

fn no_stop() -> bool {
    false
}

fn bootstrap_then_merge(p: Provider) {
    let mut h = Host::new(p, 1 << 20, 5);
    h.change(); // before the bootstrap: seen by exploring, not merged
    let mut r = h.recorder(&[]);
    h.llm.push(Scripted::Json(
        200,
        tool_call(
            p,
            "run_command",
            json!({"command": "echo probed-$((6*7)); uname -s"}),
        ),
    ));
    h.llm.push(Scripted::Json(
        200,
        tool_call(p, "read_file", json!({"path": "/etc/hostname"})),
    ));
    h.llm.push(Scripted::Json(
        200,
        tool_call(
            p,
            "write_overview",
            json!({"sections": [
                {"section": "TL;DR", "content": "A Debian host running nginx."},
                {"section": "Installed Services", "content": "- nginx"}
            ]}),
        ),
    ));
    let t0 = Instant::now();
    assert_eq!(r.tick(t0, &no_stop), Outcome::Bootstrapped);
    let reqs = h.llm.requests();
    assert_eq!(reqs.len(), 3);
    match p {
        Provider::Anthropic => {
            assert_eq!(reqs[0].path, "/v1/messages");
            assert_eq!(reqs[0].header("x-api-key"), Some("test-key"));
            assert_eq!(reqs[0].header("anthropic-version"), Some("2023-06-01"));
            let result = &reqs[1].body["messages"][2]["content"][0];
            assert_eq!(result["type"], "tool_result");
            assert!(
                result["content"].as_str().unwrap().contains("probed-42"),
                "{result}"
            );
        }
        Provider::OpenAi => {
            assert_eq!(reqs[0].path, "/chat/completions");
            assert_eq!(reqs[0].header("authorization"), Some("Bearer test-key"));
            let msgs = reqs[1].body["messages"].as_array().unwrap();
            let tool = msgs.iter().find(|m| m["role"] == "tool").unwrap();
            assert!(
                tool["content"].as_str().unwrap().contains("probed-42"),
                "{tool}"
            );
        }
    }
    let overview = h.overview();
    assert!(
        overview.starts_with("# Host overview: test\n\n_Last updated: "),
        "{overview}"
    );
    assert!(overview.contains("## TL;DR\n\nA Debian host running nginx.\n"));
    assert!(overview.contains("## Installed Services\n\n- nginx\n"));
    assert!(h
        .changelog()
        .ends_with("| recorder | first overview written after exploring the host\n"));

    // Two changes and a failed one: one merge call with the two.
    let a = h.change();
    let b = h.change();
    h.record("write_file", "error");
    h.record("read_file", "ok");
    h.llm.push(echo_merge(p));
    assert_eq!(r.tick(t0, &no_stop), Outcome::Merged(2));
    let merge = h.llm.requests().pop().unwrap();
    let paths: Vec<String> = merge
        .events()
        .iter()
        .map(|e| e["params"]["file_path"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(paths, [a.clone(), b.clone()]);
    match p {
        Provider::Anthropic => assert_eq!(
            merge.body["tool_choice"],
            json!({"type": "tool", "name": "record_changes"})
        ),
        Provider::OpenAi => {
            assert_eq!(
                merge.body["tool_choice"]["function"]["name"],
                "record_changes"
            );
            assert_eq!(merge.body["tools"][0]["function"]["strict"], true);
        }
    }
    let overview = h.overview();
    assert!(
        overview.contains("## Data Locations\n\n2 files written\n"),
        "{overview}"
    );
    assert!(
        overview.contains(&format!(
            "- 2026-11-21 18:00 | write_file | {b}\n- 2026-11-21 18:00 | write_file | {a}\n"
        )),
        "{overview}"
    );
    assert!(h.changelog().ends_with(&format!(
        "| write_file | {a}\n2026-11-21 18:00 | write_file | {b}\n"
    )));

    // Nothing new: an idle tick, no call.
    let calls = h.llm.count();
    assert_eq!(r.tick(t0, &no_stop), Outcome::Idle);
    assert_eq!(h.llm.count(), calls);
    assert_eq!(h.llm.unused(), 0);
    assert_eq!(
        h.metrics.get(
            "mymcp_recorder_events_consumed_total",
            &[("tool", "write_file")]
        ),
        2.0
    );
    assert_eq!(
        h.metrics.get(
            "mymcp_recorder_llm_calls_total",
            &[("phase", "bootstrap"), ("result", "ok")]
        ),
        3.0
    );
    assert_eq!(
        h.metrics
            .get("mymcp_recorder_bash_probe_runs_total", &[("result", "ok")]),
        1.0
    );
    assert!(
        h.metrics.get(
            "mymcp_recorder_llm_tokens_total",
            &[("phase", "merge"), ("direction", "input")]
        ) > 0.0
    );
}

#[test]
fn anthropic_bootstraps_then_merges() {
    bootstrap_then_merge(Provider::Anthropic);
}

#[test]
fn openai_bootstraps_then_merges() {
    bootstrap_then_merge(Provider::OpenAi);
}

fn failures_roll_back_halve_back_off_and_open_the_breaker(p: Provider) {
    let mut h = Host::new(p, 1 << 20, 5);
    h.with_overview();
    let mut r = h.recorder(&[]);
    let mut paths: Vec<String> = (0..6).map(|_| h.change()).collect();
    let t0 = Instant::now();
    let secs = |s: u64| t0 + Duration::from_secs(s);

    // A 500: failed, nothing written, the next try waits 30 s.
    h.llm.push(Scripted::Json(
        500,
        json!({"error": {"type": "overloaded_error"}}),
    ));
    assert!(matches!(r.tick(secs(0), &no_stop), Outcome::Failed(e) if e.contains("HTTP 500")));
    assert!(
        !h.data().join("cursor.json").exists(),
        "the cursor did not move"
    );
    assert_eq!(r.state().consecutive_failures, 1);
    assert_eq!(r.next_wake(secs(0)), Duration::from_secs(30));
    assert_eq!(r.tick(secs(10), &no_stop), Outcome::Backoff);
    assert_eq!(h.llm.count(), 1, "no call while backing off");

    // Not JSON at all: malformed; 60 s now.
    h.llm
        .push(Scripted::Raw(200, "<html>gateway</html>".into()));
    assert!(matches!(r.tick(secs(30), &no_stop), Outcome::Failed(e) if e.contains("malformed")));
    assert_eq!(r.state().not_before, Some(secs(90)));

    // A max-tokens answer: the batch of 4 is halved; third failure: the breaker opens.
    h.llm.push(Scripted::Json(200, max_tokens(p)));
    assert!(matches!(r.tick(secs(90), &no_stop), Outcome::Failed(e) if e.contains("token limit")));
    assert_eq!(h.llm.requests()[2].events().len(), 4);
    assert_eq!(r.state().batch_limit, 2);
    assert!(r.state().circuit_open);
    assert_eq!(r.state().not_before, Some(secs(210)));

    // Open and nothing new: no call, even after the backoff.
    assert_eq!(r.tick(secs(300), &no_stop), Outcome::CircuitOpen);
    assert_eq!(h.llm.count(), 3);

    // A new event: one trial call, with the halved batch; a timeout keeps the breaker open.
    paths.push(h.change());
    h.llm.push(Scripted::Hang(Duration::from_secs(3)));
    let started = Instant::now();
    assert!(
        matches!(r.tick(secs(301), &no_stop), Outcome::Failed(e) if e.contains("did not answer"))
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(h.llm.requests()[3].events().len(), 2);
    assert!(r.state().circuit_open);
    assert_eq!(r.state().consecutive_failures, 4);
    assert_eq!(r.tick(secs(2000), &no_stop), Outcome::CircuitOpen);

    // Another event; the trial succeeds: closed, limits restored, and every event follows once.
    paths.push(h.change());
    h.llm.push(echo_merge(p));
    assert_eq!(r.tick(secs(2001), &no_stop), Outcome::Merged(2));
    assert!(!r.state().circuit_open);
    assert_eq!(r.state().consecutive_failures, 0);
    assert_eq!(r.state().batch_limit, 4);
    assert_eq!(r.next_wake(secs(2001)), Duration::from_secs(300));
    h.llm.push(echo_merge(p));
    assert_eq!(r.tick(secs(2002), &no_stop), Outcome::Merged(4));
    h.llm.push(echo_merge(p));
    assert_eq!(r.tick(secs(2003), &no_stop), Outcome::Merged(2));
    assert_eq!(r.tick(secs(2004), &no_stop), Outcome::Idle);
    let logged: Vec<String> = h
        .changelog()
        .lines()
        .map(|l| l.rsplit(" | ").next().unwrap().to_owned())
        .collect();
    assert_eq!(logged, paths, "each event once, in order");
    for (result, n) in [
        ("http_error", 1.0),
        ("malformed", 1.0),
        ("max_tokens", 1.0),
        ("timeout", 1.0),
        ("ok", 3.0),
    ] {
        assert_eq!(
            h.metrics.get(
                "mymcp_recorder_llm_calls_total",
                &[("phase", "merge"), ("result", result)]
            ),
            n,
            "{result}"
        );
    }
    assert_eq!(
        h.metrics.get(
            "mymcp_recorder_merge_cycles_total",
            &[("reason", "circuit_open")]
        ),
        2.0
    );
}

#[test]
fn anthropic_failures_roll_back_halve_back_off_and_open_the_breaker() {
    failures_roll_back_halve_back_off_and_open_the_breaker(Provider::Anthropic);
}

#[test]
fn openai_failures_roll_back_halve_back_off_and_open_the_breaker() {
    failures_roll_back_halve_back_off_and_open_the_breaker(Provider::OpenAi);
}

#[test]
fn answers_that_break_the_schema_are_refused_and_retried() {
    for p in [Provider::Anthropic, Provider::OpenAi] {
        let mut h = Host::new(p, 1 << 20, 5);
        h.with_overview();
        let mut r = h.recorder(&[
            ("MYMCP_RECORDER_BACKOFF_MIN_SEC", "1"),
            ("MYMCP_RECORDER_CIRCUIT_BREAKER_THRESHOLD", "100"),
        ]);
        let path = h.change();
        let t0 = Instant::now();
        // A truncated answer (a required list missing), a bad changelog line, a write into
        // Recent Changes, a reply without the forced call: all refused, nothing written.
        for bad in [
            tool_call(p, "record_changes", json!({"new_changelog_lines": []})),
            tool_call(
                p,
                "record_changes",
                json!({"new_changelog_lines": ["today: wrote it"], "section_updates": []}),
            ),
            tool_call(
                p,
                "record_changes",
                json!({"new_changelog_lines": [], "section_updates": [{"section": "Recent Changes", "content": "x"}]}),
            ),
            tool_call(p, "something_else", json!({})),
        ] {
            h.llm.push(Scripted::Json(200, bad));
        }
        if p == Provider::OpenAi {
            // Arguments cut off without a length stop.
            let mut cut = tool_call(p, "record_changes", json!({}));
            cut["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] =
                json!("{\"new_changelog_lines\": [\"2026-11-21 18:00 | x");
            h.llm.push(Scripted::Json(200, cut));
        }
        let before = h.overview();
        let mut at = t0;
        for _ in 0..h.llm.unused() {
            at += Duration::from_secs(700);
            assert!(matches!(r.tick(at, &no_stop), Outcome::Failed(_)));
        }
        assert_eq!(h.overview(), before);
        assert_eq!(h.changelog(), "");
        h.llm.push(echo_merge(p));
        assert_eq!(
            r.tick(at + Duration::from_secs(700), &no_stop),
            Outcome::Merged(1)
        );
        assert!(h.changelog().contains(&path));
    }
}

#[test]
fn a_single_event_too_large_for_any_answer_is_skipped_and_counted() {
    let mut h = Host::new(Provider::Anthropic, 1 << 20, 5);
    h.with_overview();
    let mut r = h.recorder(&[("MYMCP_RECORDER_MAX_EVENTS_PER_CYCLE", "2")]);
    let _huge = h.change();
    let next = h.change();
    let t0 = Instant::now();
    h.llm
        .push(Scripted::Json(200, max_tokens(Provider::Anthropic)));
    assert!(matches!(r.tick(t0, &no_stop), Outcome::Failed(_)));
    assert_eq!(r.state().batch_limit, 1);
    h.llm
        .push(Scripted::Json(200, max_tokens(Provider::Anthropic)));
    assert!(matches!(
        r.tick(t0 + Duration::from_secs(31), &no_stop),
        Outcome::Failed(_)
    ));
    assert_eq!(
        h.metrics
            .get("mymcp_recorder_event_loss_total", &[("reason", "skipped")]),
        1.0
    );
    h.llm.push(echo_merge(Provider::Anthropic));
    assert_eq!(
        r.tick(t0 + Duration::from_secs(200), &no_stop),
        Outcome::Merged(1)
    );
    assert_eq!(
        h.changelog(),
        format!("2026-11-21 18:00 | write_file | {next}\n")
    );
}

#[test]
fn audit_rotation_between_cycles_loses_and_repeats_nothing() {
    for p in [Provider::Anthropic, Provider::OpenAi] {
        // About four records per file: every cycle below spans rotations, some several.
        let mut h = Host::new(p, 2048, 50);
        h.with_overview();
        let mut r = h.recorder(&[("MYMCP_RECORDER_MAX_EVENTS_PER_CYCLE", "3")]);
        let mut paths = Vec::new();
        let mut at = Instant::now();
        for round in 0..8 {
            for _ in 0..(round % 4 + 1) * 2 {
                paths.push(h.change());
                h.record("read_file", "ok");
            }
            // Drain what is there, a batch of three at a time.
            loop {
                h.llm.push(echo_merge(p));
                at += Duration::from_secs(1);
                match r.tick(at, &no_stop) {
                    Outcome::Merged(_) => {}
                    Outcome::Idle => break,
                    other => panic!("{other:?}"),
                }
            }
            // The idle tick did not use its scripted answer.
            assert_eq!(h.llm.unused(), 1);
            h.llm.clear();
        }
        let rotated = std::fs::read_dir(h.dir.path().join("audit"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("audit.log.")
            })
            .count();
        assert!(rotated >= 10, "the log rotated {rotated} times");
        let logged: Vec<String> = h
            .changelog()
            .lines()
            .map(|l| l.rsplit(" | ").next().unwrap().to_owned())
            .collect();
        assert_eq!(logged, paths, "{p:?}: every event once, in order");
        assert_eq!(
            h.metrics
                .get("mymcp_recorder_event_loss_total", &[("reason", "rotated")]),
            0.0
        );
        // The cursor names the current file.
        assert_eq!(
            h.cursor()["file"],
            h.dir.path().join("audit/audit.log").display().to_string()
        );
    }
}

#[test]
fn lines_rotated_away_before_they_were_read_are_counted_as_lost() {
    let p = Provider::Anthropic;
    // One backup only: three rotations between two cycles drop a whole file unread.
    let mut h = Host::new(p, 1024, 1);
    h.with_overview();
    let mut r = h.recorder(&[("MYMCP_RECORDER_MAX_EVENTS_PER_CYCLE", "1000")]);
    let first = h.change();
    h.llm.push(echo_merge(p));
    assert_eq!(r.tick(Instant::now(), &no_stop), Outcome::Merged(1));
    let seq_before = h.cursor()["seq"].as_u64().unwrap();
    let mut paths = vec![first];
    for _ in 0..12 {
        paths.push(h.change());
    }
    h.llm.push(echo_merge(p));
    let outcome = r.tick(Instant::now(), &no_stop);
    let Outcome::Merged(n) = outcome else {
        panic!("{outcome:?}")
    };
    let lost = h
        .metrics
        .get("mymcp_recorder_event_loss_total", &[("reason", "rotated")]) as u64;
    // Each change is two lines (start and outcome): lines = 2 × events written since.
    let seq_after = h.cursor()["seq"].as_u64().unwrap();
    // The oldest file left may start with an outcome whose start line was lost.
    let read = seq_after - seq_before - lost;
    assert!(
        read == 2 * n as u64 || read == 2 * n as u64 - 1,
        "lost {lost}, merged {n}, read {read}"
    );
    assert!(lost > 0 && n > 0, "lost {lost}, merged {n}");
    let logged = h.changelog();
    assert!(logged.ends_with(&format!("{}\n", paths.last().unwrap())));
}

#[test]
fn metrics_are_written_as_a_prometheus_text_file() {
    let h = Host::new(Provider::Anthropic, 1 << 20, 5);
    h.with_overview();
    let mut r = h.recorder(&[]);
    assert_eq!(r.tick(Instant::now(), &no_stop), Outcome::Idle);
    let file = h.data().join("metrics.prom");
    h.metrics.write_textfile(&file).unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains("mymcp_recorder_merge_cycles_total{reason=\"idle\"} 1\n"),
        "{text}"
    );
    assert!(text.contains("mymcp_recorder_circuit_open 0\n"));
    assert!(text.contains("# TYPE mymcp_recorder_merge_duration_seconds histogram\n"));
}

#[test]
fn the_bootstrap_is_bounded_by_iterations_and_tokens_and_retried_later() {
    for p in [Provider::Anthropic, Provider::OpenAi] {
        let h = Host::new(p, 1 << 20, 5);
        let mut r = h.recorder(&[
            ("MYMCP_RECORDER_BOOTSTRAP_MAX_ITERATIONS", "3"),
            ("MYMCP_RECORDER_BOOTSTRAP_RETRY_INTERVAL_SEC", "100"),
        ]);
        // A model that only ever probes: the last call is forced to write, and when it still
        // does not, the bootstrap fails after three calls.
        for _ in 0..3 {
            h.llm.push(Scripted::Json(
                200,
                tool_call(p, "run_command", json!({"command": "true"})),
            ));
        }
        let t0 = Instant::now();
        let outcome = r.tick(t0, &no_stop);
        assert!(
            matches!(&outcome, Outcome::BootstrapFailed(e) if e.contains("after 3 LLM calls")),
            "{outcome:?}"
        );
        let reqs = h.llm.requests();
        assert_eq!(reqs.len(), 3);
        let forced = |body: &Value| match p {
            Provider::Anthropic => {
                body["tool_choice"] == json!({"type": "tool", "name": "write_overview"})
            }
            Provider::OpenAi => body["tool_choice"]["function"]["name"] == "write_overview",
        };
        assert!(!forced(&reqs[0].body) && forced(&reqs[2].body));
        assert!(!h.data().join("overview/overview.md").exists());
        // Not again before the retry interval.
        assert_eq!(
            r.tick(t0 + Duration::from_secs(50), &no_stop),
            Outcome::BootstrapWait
        );
        assert_eq!(h.llm.count(), 3);
        // The token budget: 120 tokens per call, a budget of 200 allows two calls.
        let mut r = h.recorder(&[("MYMCP_RECORDER_BOOTSTRAP_TOKEN_BUDGET", "200")]);
        for _ in 0..2 {
            h.llm.push(Scripted::Json(
                200,
                tool_call(p, "run_command", json!({"command": "true"})),
            ));
        }
        let outcome = r.tick(t0, &no_stop);
        assert!(
            matches!(&outcome, Outcome::BootstrapFailed(e) if e.contains("token budget of 200")),
            "{outcome:?}"
        );
        assert_eq!(h.llm.count(), 5);
        assert!(
            forced(&h.llm.requests()[4].body),
            "nearly out of tokens: forced to write"
        );
        // Retried after the interval, it succeeds.
        let mut r = h.recorder(&[]);
        h.llm.push(Scripted::Json(
            200,
            tool_call(
                p,
                "write_overview",
                json!({"sections": [{"section": "TL;DR", "content": "x"}]}),
            ),
        ));
        assert_eq!(r.tick(t0, &no_stop), Outcome::Bootstrapped);
        assert_eq!(
            h.metrics.get(
                "mymcp_recorder_bootstrap_runs_total",
                &[("result", "iterations")]
            ),
            1.0
        );
        assert_eq!(
            h.metrics.get(
                "mymcp_recorder_bootstrap_runs_total",
                &[("result", "budget")]
            ),
            1.0
        );
    }
}
