//! mymcp-test-peer: a hostile stand-in for the frontend, used by the end-to-end tests.
//!
//! It is started as the frontend's uid (or another one) and speaks raw frames to a socket:
//!
//! ```text
//! mymcp-test-peer SOCKET SCENARIO [ARG]
//! ```
//!
//! and prints one line per answer it gets (`Identity rw`, `Unauthenticated`, `Tool Err
//! PermissionDenied`, `Closed`, …) so that the test can assert on what the executor did.

#![forbid(unsafe_code)]

use mymcp_protocol::frame::{self, FrameError, MAX_FRAME_LEN};
use mymcp_protocol::{
    BashExecute, CallOrigin, ClientFrame, FrontendRequest, FrontendResponse, Hello, ServerFrame,
    TokenDigest, ToolCall,
};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::Duration;

type Req = ClientFrame<FrontendRequest>;
type Resp = ServerFrame<FrontendResponse>;

fn connect(path: &str) -> UnixStream {
    let s = UnixStream::connect(path).unwrap_or_else(|e| {
        println!("ConnectFailed {e}");
        std::process::exit(0)
    });
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Reads one answer and prints it; returns false when the connection is closed.
fn answer(s: &mut UnixStream) -> bool {
    match frame::read_from::<Resp, _>(s) {
        Ok(ServerFrame::Welcome(_)) => println!("Welcome"),
        Ok(ServerFrame::Refused { reason }) => println!("Refused {reason}"),
        Ok(ServerFrame::Response { id, body }) => match body {
            FrontendResponse::Identity(i) => println!("Identity {} id={id}", i.role),
            FrontendResponse::Unauthenticated => println!("Unauthenticated id={id}"),
            FrontendResponse::Tool(Ok(_)) => println!("Tool Ok id={id}"),
            FrontendResponse::Tool(Err(f)) => println!("Tool Err {} id={id}", f.code),
            FrontendResponse::Admin(a) => {
                let kind = format!("{a:?}");
                let kind = kind.split(['(', ' ', '{']).next().unwrap_or("");
                println!("Admin {kind} id={id}")
            }
            FrontendResponse::Metrics(m) => {
                let kind = format!("{m:?}");
                let kind = kind.split(['(', ' ', '{']).next().unwrap_or("");
                println!("Metrics {kind} id={id}")
            }
            FrontendResponse::Transfer(Ok(_)) => println!("Transfer Ok id={id}"),
            FrontendResponse::Transfer(Err(e)) => println!("Transfer Err {} id={id}", e.kind),
            FrontendResponse::TransferProbe(Ok(_)) => println!("Probe Ok id={id}"),
            FrontendResponse::TransferProbe(Err(e)) => println!("Probe Err {} id={id}", e.kind),
            FrontendResponse::Acknowledged(b) => println!("Acknowledged {b} id={id}"),
            FrontendResponse::Jobs(jobs) => println!("Jobs {} id={id}", jobs.len()),
            FrontendResponse::OAuth(o) => {
                let kind = format!("{o:?}");
                let kind = kind.split(['(', ' ', '{']).next().unwrap_or("");
                println!("OAuth {kind} id={id}")
            }
            FrontendResponse::Offer(o) => {
                println!("Offer server_overview={} id={id}", o.server_overview)
            }
            FrontendResponse::Traced(t) => {
                println!("Traced spans={} id={id}", t.spans.as_slice().len())
            }
            FrontendResponse::AuditRecords(a) => {
                let kind = format!("{a:?}");
                let kind = kind.split(['(', ' ', '{']).next().unwrap_or("");
                println!("AuditRecords {kind} id={id}")
            }
        },
        Ok(ServerFrame::Progress { id, .. }) => println!("Progress id={id}"),
        Ok(ServerFrame::Pipe { id, .. }) => println!("Pipe id={id}"),
        Err(FrameError::Io(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
            ) =>
        {
            println!("Closed");
            return false;
        }
        Err(e) => {
            println!("Error {e}");
            return false;
        }
    }
    true
}

fn hello(s: &mut UnixStream) -> bool {
    if frame::write_to(s, &Req::Hello(Hello::current())).is_err() {
        println!("Closed");
        return false;
    }
    answer(s)
}

fn digest_of(token: &str) -> TokenDigest {
    TokenDigest(Sha256::digest(token.as_bytes()).into())
}

fn parse_digest(hex: &str) -> TokenDigest {
    let mut d = [0u8; 32];
    for (i, b) in d.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex digest");
    }
    TokenDigest(d)
}

fn bash(token: TokenDigest, command: &str) -> FrontendRequest {
    FrontendRequest::Call {
        token,
        origin: CallOrigin {
            peer: "evil".into(),
            request_id: "evil".into(),
        },
        call: ToolCall::BashExecute(BashExecute {
            command: command.into(),
            timeout: Some(5),
            working_dir: None,
            max_output_bytes: None,
            background: false,
            handoff_after: None,
        }),
    }
}

/// One connection of the `flood` scenario: (requests sent, stalled, times closed, the
/// connection if it is still open).
fn flood(path: &str, n: u64) -> (u64, bool, usize, Option<UnixStream>) {
    let (mut sent, mut closed) = (0, 0);
    let mut id = 0u64;
    'connect: while sent < n {
        let Ok(mut c) = UnixStream::connect(path) else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        if !(frame::write_to(&mut c, &Req::Hello(Hello::current())).is_ok()
            && matches!(
                frame::read_from::<Resp, _>(&mut c),
                Ok(ServerFrame::Welcome(_))
            ))
        {
            closed += 1;
            continue;
        }
        c.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
        while sent < n {
            // At most 16 requests per millisecond per connection: the executor answers them
            // as fast as they come, so few are unanswered at any time.
            if id.is_multiple_of(16) {
                std::thread::sleep(Duration::from_millis(1));
            }
            let bytes = frame::encode(&Req::Request {
                id,
                body: FrontendRequest::Metrics { token: None },
            })
            .unwrap();
            id += 1;
            match c.write_all(&bytes) {
                Ok(()) => sent += 1,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return (sent, true, closed, Some(c));
                }
                Err(_) => {
                    closed += 1;
                    continue 'connect;
                }
            }
        }
        return (sent, false, closed, Some(c));
    }
    (sent, false, closed, None)
}

/// Whether the other end closed `c` (without waiting; data, if any, is discarded).
fn closed_by_peer(c: &mut UnixStream) -> bool {
    c.set_nonblocking(true).unwrap();
    let mut b = [0u8; 4096];
    let closed = loop {
        match std::io::Read::read(c, &mut b) {
            Ok(0) => break true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break false,
            Err(_) => break true,
        }
    };
    c.set_nonblocking(false).unwrap();
    closed
}

fn send(s: &mut UnixStream, f: &Req) {
    if frame::write_to(s, f).is_err() {
        println!("WriteFailed");
    }
}

/// The `tool_flood` scenario: the calls are written by a thread of their own, so that answers
/// are read while requests still go out.
fn tool_flood(
    s: &mut UnixStream,
    token: TokenDigest,
    (n, window): (u64, u64),
    tool: &str,
    path: &str,
    wait: Duration,
) {
    use std::collections::BTreeMap;
    use std::time::Instant;
    if !hello(s) {
        return;
    }
    let call = |path: &str| match tool {
        "read_file" => ToolCall::ReadFile(mymcp_protocol::ReadFile {
            file_path: path.into(),
            offset: None,
            limit: None,
        }),
        "grep" => ToolCall::Grep(mymcp_protocol::Grep {
            pattern: "x".into(),
            path: Some(path.into()),
            glob: None,
            output_mode: None,
            context_lines: None,
            max_results: None,
            case_insensitive: None,
        }),
        "prepare_download" => ToolCall::PrepareDownload(mymcp_protocol::PrepareDownload {
            src_path: path.into(),
            expires_in: Some(900),
        }),
        other => panic!("flood: unknown tool {other}"),
    };
    let mut writer = s.try_clone().expect("clone");
    let body = call(path);
    let started = Instant::now();
    // The executor allows 1,024 requests in flight per connection, as the frontend knows.
    let window = window.clamp(1, 1000);
    // One credit per answer: the sender waits for one before going past the window.
    let (credit, credits) = std::sync::mpsc::channel::<()>();
    let sender = std::thread::spawn(move || {
        for id in 1..=n {
            if id > window && credits.recv().is_err() {
                break;
            }
            let req = Req::Request {
                id,
                body: FrontendRequest::Call {
                    token,
                    origin: CallOrigin {
                        peer: "evil".into(),
                        request_id: format!("flood-{id}"),
                    },
                    call: body.clone(),
                },
            };
            if frame::write_to(&mut writer, &req).is_err() {
                break;
            }
        }
    });
    let end = started + wait;
    let mut outcomes: BTreeMap<String, (u64, u128)> = BTreeMap::new();
    let mut answered = 0;
    while answered < n {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() || s.set_read_timeout(Some(left)).is_err() {
            break;
        }
        let kind = match frame::read_from::<Resp, _>(s) {
            Ok(ServerFrame::Response { body, .. }) => match body {
                FrontendResponse::Tool(Ok(_)) => "Ok".to_owned(),
                FrontendResponse::Tool(Err(f)) => f.code.to_string(),
                other => format!("{other:?}"),
            },
            Ok(_) => continue,
            Err(e) => {
                println!("stopped {e}");
                break;
            }
        };
        answered += 1;
        let _ = credit.send(());
        let ms = started.elapsed().as_millis();
        let e = outcomes.entry(kind).or_default();
        e.0 += 1;
        e.1 = e.1.max(ms);
    }
    println!("sent={n} answered={answered}");
    for (kind, (count, ms)) in outcomes {
        println!("outcome {kind} {count} max_ms={ms}");
    }
    let _ = std::io::stdout().flush();
    // Whatever is still unanswered stays in flight until this process exits.
    drop(sender);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (path, scenario) = (&args[1], args[2].as_str());
    let arg = args.get(3).map(String::as_str).unwrap_or("");
    let mut s = connect(path);
    match scenario {
        // Only the handshake: shows whether the executor accepts this uid at all.
        "hello" => {
            hello(&mut s);
        }
        // Identify with a token value given in ARG (the peer hashes it like the frontend).
        "identify" => {
            if hello(&mut s) {
                send(
                    &mut s,
                    &Req::Request {
                        id: 1,
                        body: FrontendRequest::Identify {
                            token: digest_of(arg),
                        },
                    },
                );
                answer(&mut s);
            }
        }
        // What the host offers, asked with the token given.
        "offer" => {
            if hello(&mut s) {
                send(
                    &mut s,
                    &Req::Request {
                        id: 1,
                        body: FrontendRequest::Offer {
                            token: digest_of(arg),
                        },
                    },
                );
                answer(&mut s);
            }
        }
        // A well-formed call with the digest of an empty token, of a wrong token, and with
        // the raw digest given in ARG (e.g. an ro token's); each runs `touch` on a marker.
        "bash-without-token" | "bash-wrong-token" | "bash-with-digest" => {
            let (token, marker) = match scenario {
                "bash-without-token" => (digest_of(""), arg),
                "bash-wrong-token" => (digest_of("tok_guessed0000000000000000000000"), arg),
                _ => {
                    let (hex, marker) = arg.split_once(':').expect("DIGEST:MARKER");
                    (parse_digest(hex), marker)
                }
            };
            if hello(&mut s) {
                send(
                    &mut s,
                    &Req::Request {
                        id: 9,
                        body: bash(token, &format!("touch {marker}")),
                    },
                );
                answer(&mut s);
            }
        }
        // Token management and metrics with the token value given in ARG.
        "admin-create" | "metrics" => {
            let body = if scenario == "metrics" {
                FrontendRequest::Metrics {
                    token: Some(digest_of(arg)),
                }
            } else {
                FrontendRequest::Admin {
                    token: digest_of(arg),
                    origin: CallOrigin {
                        peer: "evil".into(),
                        request_id: "evil".into(),
                    },
                    op: mymcp_protocol::AdminOp::Create {
                        name: "forged".into(),
                        role: mymcp_protocol::Role::Rw,
                        // Root's rights, asked for without an admin token.
                        user: Some("root".into()),
                        limits: Default::default(),
                        view: Default::default(),
                    },
                }
            };
            if hello(&mut s) {
                send(&mut s, &Req::Request { id: 3, body });
                answer(&mut s);
            }
        }
        // Redeem, probe and commit grants whose ids are guessed (the HMAC of the tickets is the
        // frontend's; a compromised frontend skips it): the executor must know nothing of them.
        "redeem-guess" => {
            if hello(&mut s) {
                let grant = mymcp_protocol::GrantId([0x42; 16]);
                let origin = CallOrigin {
                    peer: "evil".into(),
                    request_id: "evil".into(),
                };
                for (id, direction) in [
                    (1, mymcp_protocol::Direction::Upload),
                    (2, mymcp_protocol::Direction::Download),
                ] {
                    send(
                        &mut s,
                        &Req::Request {
                            id,
                            body: FrontendRequest::Redeem {
                                grant,
                                direction,
                                announced_len: None,
                                origin: origin.clone(),
                            },
                        },
                    );
                    answer(&mut s);
                }
                send(
                    &mut s,
                    &Req::Request {
                        id: 3,
                        body: FrontendRequest::Probe {
                            grant,
                            direction: mymcp_protocol::Direction::Download,
                            origin: CallOrigin {
                                peer: "127.0.0.1".into(),
                                request_id: "peer".into(),
                            },
                        },
                    },
                );
                answer(&mut s);
                send(
                    &mut s,
                    &Req::Request {
                        id: 4,
                        body: FrontendRequest::CommitUpload { grant, claim: 1 },
                    },
                );
                answer(&mut s);
            }
        }
        // Bytes that are no frame at all.
        "garbage" => {
            let _ = s.write_all(&[0, 0, 0, 5, 0xde, 0xad, 0xbe, 0xef, 0xff]);
            answer(&mut s);
        }
        // Garbage after a good handshake.
        "garbage-after-hello" => {
            if hello(&mut s) {
                let _ = s.write_all(&[0, 0, 0, 3, 0x7f, 0x7f, 0x7f]);
                answer(&mut s);
            }
        }
        // A header announcing more than the maximum frame size.
        "oversized" => {
            let _ = s.write_all(&((MAX_FRAME_LEN as u32) + 1).to_be_bytes());
            answer(&mut s);
        }
        // A request before the handshake (out of state).
        "request-before-hello" => {
            send(
                &mut s,
                &Req::Request {
                    id: 1,
                    body: FrontendRequest::Identify {
                        token: digest_of(arg),
                    },
                },
            );
            answer(&mut s);
        }
        // A second Hello after the handshake (out of state).
        "second-hello" => {
            if hello(&mut s) {
                send(&mut s, &Req::Hello(Hello::current()));
                answer(&mut s);
            }
        }
        // A Hello from another build.
        "wrong-build" => {
            let h = Hello {
                build_id: "0.0.0+other".into(),
                ..Hello::current()
            };
            send(&mut s, &Req::Hello(h));
            answer(&mut s);
            answer(&mut s);
        }
        // Benchmark: N sequential Identify round trips with the token in ARG ("TOKEN:N");
        // prints the median and the 99th percentile in microseconds.
        // Round trips timed from here: `identify` (no work) or `bash_execute true` (TOKEN
        // must then be rw), N of them one after another; prints p50 and p99.
        "bench-identify" | "bench-bash" => {
            let (token, n) = arg.split_once(':').expect("TOKEN:N");
            let n: usize = n.parse().expect("N");
            let digest = digest_of(token);
            if hello(&mut s) {
                let mut micros = Vec::with_capacity(n);
                for id in 0..n as u64 {
                    let body = if scenario == "bench-bash" {
                        bash(digest, "true")
                    } else {
                        FrontendRequest::Identify { token: digest }
                    };
                    let t = std::time::Instant::now();
                    send(&mut s, &Req::Request { id, body });
                    match frame::read_from::<Resp, _>(&mut s) {
                        Ok(ServerFrame::Response {
                            body: FrontendResponse::Identity(_),
                            ..
                        }) if scenario == "bench-identify" => {}
                        Ok(ServerFrame::Response {
                            body: FrontendResponse::Tool(Ok(_)),
                            ..
                        }) if scenario == "bench-bash" => {}
                        other => panic!("unexpected answer {other:?}"),
                    }
                    micros.push(t.elapsed().as_secs_f64() * 1e6);
                }
                micros.sort_by(f64::total_cmp);
                println!(
                    "p50_us={:.1} p99_us={:.1}",
                    micros[n / 2],
                    micros[n * 99 / 100]
                );
            }
        }
        // Frames cut short, then the write side closed: a header of two bytes, or a header
        // promising 100 bytes followed by 10.
        "truncated-header" | "truncated-body" => {
            if scenario == "truncated-body" && !hello(&mut s) {
                return;
            }
            let bytes: &[u8] = if scenario == "truncated-header" {
                &[0, 0]
            } else {
                &[0, 0, 0, 100, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0]
            };
            let _ = s.write_all(bytes);
            let _ = s.shutdown(std::net::Shutdown::Write);
            answer(&mut s);
        }
        // Well-framed bodies naming variants that do not exist: of the frame itself before the
        // handshake, of the request after it, and a Request with no body at all.
        "unknown-frame" => {
            let _ = s.write_all(&[0, 0, 0, 1, 7]);
            answer(&mut s);
        }
        "unknown-request" | "empty-request" => {
            if hello(&mut s) {
                let bytes: &[u8] = if scenario == "unknown-request" {
                    &[0, 0, 0, 3, 1, 1, 99]
                } else {
                    &[0, 0, 0, 2, 1, 1]
                };
                let _ = s.write_all(bytes);
                answer(&mut s);
            }
        }
        // A call that continues a trace ("DIGEST:MARKER:TRACE"): TRACE is `zero` (an all-zero
        // trace id, which must not decode), or `sampled`/`unsampled`. Then the OTLP export's
        // requests, which the executor serves only when its operator enabled them.
        "traced" => {
            let mut parts = arg.splitn(3, ':');
            let (hex, marker, kind) = (
                parts.next().expect("DIGEST"),
                parts.next().expect("MARKER"),
                parts.next().expect("TRACE"),
            );
            if hello(&mut s) {
                let trace = mymcp_protocol::TraceContext {
                    trace_id: mymcp_protocol::TraceId(if kind == "zero" {
                        [0; 16]
                    } else {
                        [7; 16]
                    }),
                    parent: mymcp_protocol::SpanId([9; 8]),
                    sampled: kind == "sampled",
                };
                let body =
                    bash(parse_digest(hex), &format!("touch {marker}")).with_trace(Some(trace));
                send(&mut s, &Req::Request { id: 1, body });
                if answer(&mut s) {
                    for (id, body) in [
                        (2, FrontendRequest::AuditRecords { from: 0 }),
                        (3, FrontendRequest::TelemetryMetrics),
                    ] {
                        send(&mut s, &Req::Request { id, body });
                        answer(&mut s);
                    }
                }
            }
        }
        // A zero-length frame after the handshake.
        "empty-frame" => {
            if hello(&mut s) {
                let _ = s.write_all(&[0, 0, 0, 0]);
                answer(&mut s);
            }
        }
        // A Call and a Cancel before the handshake, with a real digest ("DIGEST:MARKER").
        "call-before-hello" => {
            let (hex, marker) = arg.split_once(':').expect("DIGEST:MARKER");
            send(&mut s, &Req::Cancel { id: 9 });
            send(
                &mut s,
                &Req::Request {
                    id: 9,
                    body: bash(parse_digest(hex), &format!("touch {marker}")),
                },
            );
            answer(&mut s);
        }
        // Two requests with one id: the second is a violation, and dropping the connection
        // stops the first, which would have created MARKER after a second ("DIGEST:MARKER").
        "duplicate-id" => {
            let (hex, marker) = arg.split_once(':').expect("DIGEST:MARKER");
            if hello(&mut s) {
                let call = bash(parse_digest(hex), &format!("sleep 1; touch {marker}"));
                send(
                    &mut s,
                    &Req::Request {
                        id: 5,
                        body: call.clone(),
                    },
                );
                send(&mut s, &Req::Request { id: 5, body: call });
                while answer(&mut s) {}
            }
        }
        // N calls with random digests, pipelined on one connection ("N:MARKER") with at most
        // 512 in flight (the executor stops reading at 1024 unanswered); prints how the
        // answers were distributed.
        "guess-digests" => {
            let (n, marker) = arg.split_once(':').expect("N:MARKER");
            let n: u64 = n.parse().expect("N");
            if hello(&mut s) {
                let mut seed = Sha256::digest(format!("{:?}", std::time::SystemTime::now()));
                let mut w = s.try_clone().unwrap();
                let marker = marker.to_owned();
                let answered = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
                let seen = answered.clone();
                let writer = std::thread::spawn(move || {
                    for id in 0..n {
                        while id >= seen.load(std::sync::atomic::Ordering::Acquire) + 512 {
                            std::thread::sleep(std::time::Duration::from_millis(1));
                        }
                        seed = Sha256::digest(seed);
                        let body = bash(TokenDigest(seed.into()), &format!("touch {marker}"));
                        if frame::write_to(&mut w, &Req::Request { id, body }).is_err() {
                            break;
                        }
                    }
                });
                let (mut unauthenticated, mut other) = (0, 0);
                for _ in 0..n {
                    match frame::read_from::<Resp, _>(&mut s) {
                        Ok(ServerFrame::Response {
                            body: FrontendResponse::Unauthenticated,
                            ..
                        }) => unauthenticated += 1,
                        Ok(_) => other += 1,
                        Err(_) => {
                            answered.store(u64::MAX / 2, std::sync::atomic::Ordering::Release);
                            break;
                        }
                    }
                    answered.fetch_add(1, std::sync::atomic::Ordering::Release);
                }
                writer.join().unwrap();
                println!("Unauthenticated={unauthenticated} other={other}");
            }
        }
        // The frontend's part of an OAuth flow, played by a frontend that wants a token
        // nobody approved, or more than was approved ("MARKER"): registers, opens a request
        // and prints its approval code ("code ABCD-EFGH"); guesses codes, refresh tokens and
        // pending requests (prints how they were answered); waits until the host approves,
        // exchanges the code, refreshes asking for rw, and runs `touch MARKER` with each
        // access token it got.
        "oauth-forge" => {
            if hello(&mut s) {
                oauth_forge(&mut s, arg);
            }
        }
        // Connection A runs `sleep 1.5; touch MARKER` as request 1 ("DIGEST:MARKER");
        // connection B cancels ids 0..=N of its own (1 included) and u64::MAX, and A cancels
        // an id it never used. A's command must still complete.
        "cancel-foreign" => {
            let (hex, marker) = arg.split_once(':').expect("DIGEST:MARKER");
            let digest = parse_digest(hex);
            if hello(&mut s) {
                send(
                    &mut s,
                    &Req::Request {
                        id: 1,
                        body: bash(digest, &format!("sleep 1.5; touch {marker}")),
                    },
                );
                let mut b = connect(path);
                if hello(&mut b) {
                    for id in (0..=1000).chain([u64::MAX]) {
                        send(&mut b, &Req::Cancel { id });
                    }
                    send(
                        &mut b,
                        &Req::Request {
                            id: 77,
                            body: FrontendRequest::Identify { token: digest },
                        },
                    );
                    answer(&mut b);
                }
                send(&mut s, &Req::Cancel { id: 12345 });
                answer(&mut s);
            }
        }
        // Only Cancel frames for ids 0..N (the ids a frontend uses on its own connection),
        // then an Identify to show the connection is still served.
        "cancel-spam" => {
            let n: u64 = arg.parse().expect("N");
            if hello(&mut s) {
                for id in 0..n {
                    send(&mut s, &Req::Cancel { id });
                }
                send(
                    &mut s,
                    &Req::Request {
                        id: n + 1,
                        body: FrontendRequest::Identify {
                            token: digest_of("tok_x"),
                        },
                    },
                );
                answer(&mut s);
            }
        }
        // A grant whose id the caller knows (e.g. read out of a ticket): "OP:DIRECTION:HEX",
        // OP one of probe, redeem, commit.
        "grant" => {
            let mut f = arg.split(':');
            let (op, dir, hex) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
            let mut id = [0u8; 16];
            for (i, b) in id.iter_mut().enumerate() {
                *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex grant");
            }
            let grant = mymcp_protocol::GrantId(id);
            let direction = if dir == "upload" {
                mymcp_protocol::Direction::Upload
            } else {
                mymcp_protocol::Direction::Download
            };
            let body = match op {
                "probe" => FrontendRequest::Probe {
                    grant,
                    direction,
                    origin: CallOrigin {
                        peer: "evil".into(),
                        request_id: "evil".into(),
                    },
                },
                "redeem" => FrontendRequest::Redeem {
                    grant,
                    direction,
                    announced_len: None,
                    origin: CallOrigin {
                        peer: "evil".into(),
                        request_id: "evil".into(),
                    },
                },
                _ => FrontendRequest::CommitUpload { grant, claim: 1 },
            };
            if hello(&mut s) {
                send(&mut s, &Req::Request { id: 1, body });
                answer(&mut s);
            }
        }
        // N tool calls of one token on one connection, at most WINDOW of them in flight, as
        // a frontend forwarding them ("DIGEST:N:WINDOW:WAIT:TOOL:PATH", TOOL one of
        // read_file, grep, prepare_download; WAIT the seconds to wait for the answers).
        // Prints `sent=N answered=K` and one `outcome <Ok|code> <count> max_ms=<slowest>`
        // line per kind of answer.
        "tool_flood" => {
            let mut f = arg.splitn(6, ':');
            let token = parse_digest(f.next().unwrap());
            let n: u64 = f.next().unwrap().parse().expect("N");
            let window: u64 = f.next().unwrap().parse().expect("WINDOW");
            let wait: u64 = f.next().unwrap().parse().expect("WAIT");
            let tool = f.next().unwrap().to_owned();
            let path = f.next().unwrap().to_owned();
            let wait = Duration::from_secs(wait);
            tool_flood(&mut s, token, (n, window), &tool, &path, wait);
        }
        // Opens N more connections and holds them for SECONDS ("N:MODE:SECONDS"): MODE
        // `silent` sends nothing, `partial` half a header, `hello` the handshake. Prints how
        // many got a Welcome, then, after the hold, how many the executor had closed.
        "hold" => {
            let mut f = arg.split(':');
            let n: usize = f.next().unwrap().parse().expect("N");
            let mode = f.next().unwrap();
            let secs: u64 = f.next().unwrap().parse().expect("SECONDS");
            let mut held = vec![s];
            for _ in 1..n {
                match UnixStream::connect(path) {
                    Ok(c) => held.push(c),
                    Err(_) => break,
                }
            }
            let mut welcomed = 0;
            for c in held.iter_mut() {
                c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                if mode == "hello" {
                    let ok = frame::write_to(c, &Req::Hello(Hello::current())).is_ok()
                        && matches!(frame::read_from::<Resp, _>(c), Ok(ServerFrame::Welcome(_)));
                    welcomed += usize::from(ok);
                } else if mode == "partial" {
                    let _ = c.write_all(&[0, 0]);
                }
            }
            println!("opened={} welcomed={welcomed}", held.len());
            std::thread::sleep(Duration::from_secs(secs));
            let mut closed = 0;
            for c in held.iter_mut() {
                c.set_nonblocking(true).unwrap();
                let mut b = [0u8; 64];
                match std::io::Read::read(c, &mut b) {
                    Ok(0) => closed += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    _ => closed += 1,
                }
            }
            println!("closed={closed}");
        }
        // N connections one after the other, each doing one of: close at once, handshake and
        // close, half a frame and close, garbage, a request cut mid-body. Prints the count.
        "churn" => {
            let n: usize = arg.parse().expect("N");
            drop(s);
            let mut done = 0;
            for i in 0..n {
                let Ok(mut c) = UnixStream::connect(path) else {
                    continue;
                };
                c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                match i % 5 {
                    0 => {}
                    1 => {
                        let _ = frame::write_to(&mut c, &Req::Hello(Hello::current()));
                        let _ = frame::read_from::<Resp, _>(&mut c);
                    }
                    2 => {
                        let _ = c.write_all(&[0, 0, 1]);
                    }
                    3 => {
                        let _ = c.write_all(&[0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff]);
                    }
                    _ => {
                        let _ = frame::write_to(&mut c, &Req::Hello(Hello::current()));
                        let _ = frame::read_from::<Resp, _>(&mut c);
                        let _ = c.write_all(&[0, 0, 0x10, 0, 1, 2, 3]);
                    }
                }
                done += 1;
            }
            println!("churned={done}");
        }
        // Floods without ever reading an answer ("CONNS:N:HOLD"): CONNS connections each send
        // up to N tokenless `Metrics` requests (13-byte frames), paced so that no more than a
        // few hundred are unanswered at the executor at any time, until a write blocks for
        // 2 s (the executor stopped reading: backpressure) or the connection is closed (then
        // it connects again and goes on). Prints `sent=… stalled=… closed=…`, then holds the
        // connections for HOLD seconds without reading and prints `held`.
        "flood" => {
            let mut f = arg.split(':');
            let conns: usize = f.next().unwrap().parse().expect("CONNS");
            let n: u64 = f.next().unwrap().parse().expect("N");
            let hold: u64 = f.next().unwrap().parse().expect("HOLD");
            drop(s);
            let path = path.clone();
            let workers: Vec<_> = (0..conns)
                .map(|_| {
                    let path = path.clone();
                    std::thread::spawn(move || flood(&path, n))
                })
                .collect();
            let (mut sent, mut stalled, mut closed) = (0, 0, 0);
            let mut held = Vec::new();
            for w in workers {
                let (c, s, k, conn) = w.join().unwrap();
                sent += c;
                stalled += usize::from(s);
                closed += k;
                held.extend(conn);
            }
            println!("sent={sent} stalled={stalled} closed={closed}");
            std::thread::sleep(Duration::from_secs(hold));
            println!("held");
            drop(held);
        }
        // Frames left unfinished ("CONNS:LEN:HOLD"): CONNS connections each complete the
        // handshake, then send a header announcing LEN bytes and LEN - 1 bytes of body, and
        // never the last one. Prints `opened=… welcomed=…` once the bodies are on their way,
        // then watches for HOLD seconds which connections the executor closes and prints
        // `closed=K first_ms=… last_ms=…` (times since the bodies started).
        "partial" => {
            let mut f = arg.split(':');
            let conns: usize = f.next().unwrap().parse().expect("CONNS");
            let len: usize = f.next().unwrap().parse().expect("LEN");
            let hold: u64 = f.next().unwrap().parse().expect("HOLD");
            let mut held = vec![s];
            for _ in 1..conns {
                match UnixStream::connect(path) {
                    Ok(c) => held.push(c),
                    Err(_) => break,
                }
            }
            let mut welcomed = 0;
            for c in held.iter_mut() {
                c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let ok = frame::write_to(c, &Req::Hello(Hello::current())).is_ok()
                    && matches!(frame::read_from::<Resp, _>(c), Ok(ServerFrame::Welcome(_)));
                welcomed += usize::from(ok);
            }
            let started = std::time::Instant::now();
            for c in &held {
                let mut w = c.try_clone().unwrap();
                std::thread::spawn(move || {
                    let _ = w.write_all(&(len as u32).to_be_bytes());
                    let chunk = vec![0u8; 64 * 1024];
                    let mut left = len - 1;
                    while left > 0 {
                        let n = left.min(chunk.len());
                        if w.write_all(&chunk[..n]).is_err() {
                            return;
                        }
                        left -= n;
                    }
                });
            }
            println!("opened={} welcomed={welcomed}", held.len());
            let mut closed_at: Vec<Option<u128>> = vec![None; held.len()];
            while started.elapsed() < Duration::from_secs(hold) {
                for (c, at) in held.iter_mut().zip(closed_at.iter_mut()) {
                    if at.is_none() && closed_by_peer(c) {
                        *at = Some(started.elapsed().as_millis());
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let times: Vec<u128> = closed_at.iter().flatten().copied().collect();
            println!(
                "closed={} first_ms={} last_ms={}",
                times.len(),
                times.iter().min().copied().unwrap_or(0),
                times.iter().max().copied().unwrap_or(0)
            );
        }
        // A call (with a made-up digest) whose `request_id` is ARG: `max` (128 visible
        // characters), `long` (129), `newline` (a line break inside) or `empty`.
        "request-id" => {
            let request_id = match arg {
                "max" => "r".repeat(128),
                "long" => "r".repeat(129),
                "newline" => "r1\n2026-01-01T00:00:00Z  INFO forged".to_owned(),
                "empty" => String::new(),
                other => panic!("unknown request id kind {other}"),
            };
            if hello(&mut s) {
                let body = FrontendRequest::Call {
                    token: digest_of(""),
                    origin: CallOrigin {
                        peer: "192.0.2.1".into(),
                        request_id,
                    },
                    call: ToolCall::BashExecute(BashExecute {
                        command: "true".into(),
                        timeout: Some(5),
                        working_dir: None,
                        max_output_bytes: None,
                        background: false,
                        handoff_after: None,
                    }),
                };
                send(&mut s, &Req::Request { id: 1, body });
                answer(&mut s);
            }
        }
        other => {
            eprintln!("unknown scenario {other}");
            std::process::exit(2);
        }
    }
}

/// The `oauth-forge` scenario.
fn oauth_forge(s: &mut UnixStream, marker: &str) {
    use mymcp_protocol::oauth::{
        AuthorizeParams, ClientAuth, ClientAuthMethod, ClientMetadata, OAuthOutcome, OAuthRequest,
        PendingId, PendingRef, Secret,
    };
    use mymcp_protocol::Role;
    let origin = || CallOrigin {
        peer: "evil".into(),
        request_id: "evil".into(),
    };
    let mut id = 0u64;
    let mut ask = |s: &mut UnixStream, request: OAuthRequest| -> OAuthOutcome {
        id += 1;
        send(
            s,
            &Req::Request {
                id,
                body: FrontendRequest::OAuth(request),
            },
        );
        match frame::read_from::<Resp, _>(s) {
            Ok(ServerFrame::Response {
                body: FrontendResponse::OAuth(o),
                ..
            }) => o,
            other => panic!("{other:?}"),
        }
    };
    let kind = |o: &OAuthOutcome| match o {
        OAuthOutcome::Error(e) => format!("Error {}", e.code.as_str()),
        other => format!("{other:?}")
            .split(['(', ' ', '{'])
            .next()
            .unwrap()
            .to_owned(),
    };
    let redirect = "http://127.0.0.1:9/cb".to_owned();
    let verifier = "v".repeat(50);
    let challenge = base64url(&Sha256::digest(&verifier));
    let client_id = match ask(
        s,
        OAuthRequest::Register {
            client: ClientMetadata {
                client_name: Some("forger".into()),
                redirect_uris: vec![redirect.clone()],
                token_endpoint_auth_method: ClientAuthMethod::None,
            },
            origin: origin(),
        },
    ) {
        OAuthOutcome::Registered(r) => r.client_id,
        other => panic!("{other:?}"),
    };
    let client = || ClientAuth {
        client_id: client_id.clone(),
        secret: None,
    };
    let request = match ask(
        s,
        OAuthRequest::Authorize {
            params: AuthorizeParams {
                client_id: client_id.clone(),
                redirect_uri: redirect.clone(),
                state: None,
                code_challenge: challenge,
                scope: Role::Rw,
                resource: None,
            },
            document: None,
            origin: origin(),
        },
    ) {
        OAuthOutcome::Opened(r) => r,
        other => panic!("{other:?}"),
    };
    match ask(s, OAuthRequest::Consent { request }) {
        OAuthOutcome::Waiting(w) => println!("code {}", w.approval_code),
        other => panic!("{other:?}"),
    }
    std::io::stdout().flush().unwrap();

    let mut seed = Sha256::digest(format!("{:?}", std::time::SystemTime::now()));
    let mut next = || {
        seed = Sha256::digest(seed);
        <[u8; 32]>::from(seed)
    };
    let mut tally = std::collections::BTreeMap::<String, u32>::new();
    for _ in 0..200 {
        let guessed = [
            OAuthRequest::Exchange {
                code: TokenDigest(next()),
                client: client(),
                redirect_uri: redirect.clone(),
                verifier: verifier.clone(),
                resource: None,
                origin: origin(),
            },
            OAuthRequest::Refresh {
                token: TokenDigest(next()),
                client: client(),
                scope: Some(Role::Rw),
                resource: None,
                origin: origin(),
            },
            OAuthRequest::Consent {
                request: PendingRef {
                    id: PendingId(next()[..16].try_into().unwrap()),
                    secret: Secret(next()),
                },
            },
            // The right request with a guessed cookie secret.
            OAuthRequest::Consent {
                request: PendingRef {
                    id: request.id,
                    secret: Secret(next()),
                },
            },
        ];
        for g in guessed {
            *tally.entry(kind(&ask(s, g))).or_default() += 1;
        }
    }
    println!("guesses {tally:?}");
    std::io::stdout().flush().unwrap();

    // Until the host decides (20 s at most).
    let code = (0..400)
        .find_map(|_| match ask(s, OAuthRequest::Consent { request }) {
            OAuthOutcome::Waiting(_) => {
                std::thread::sleep(Duration::from_millis(50));
                None
            }
            OAuthOutcome::Redirect(url) => Some(
                url.split(['?', '&'])
                    .find_map(|kv| kv.strip_prefix("code="))
                    .expect("a code")
                    .to_owned(),
            ),
            other => panic!("{other:?}"),
        })
        .expect("approved in time");
    let tokens = match ask(
        s,
        OAuthRequest::Exchange {
            code: digest_of(&code),
            client: client(),
            redirect_uri: redirect.clone(),
            verifier: verifier.clone(),
            resource: None,
            origin: origin(),
        },
    ) {
        OAuthOutcome::Tokens(t) => t,
        other => panic!("{other:?}"),
    };
    println!("exchanged scope={}", tokens.scope.as_str());
    let widened = match ask(
        s,
        OAuthRequest::Refresh {
            token: digest_of(&tokens.refresh_token),
            client: client(),
            scope: Some(Role::Rw),
            resource: None,
            origin: origin(),
        },
    ) {
        OAuthOutcome::Tokens(t) => t,
        other => panic!("{other:?}"),
    };
    println!("refreshed scope={}", widened.scope.as_str());
    for t in [&tokens.access_token, &widened.access_token] {
        id += 1;
        send(
            s,
            &Req::Request {
                id,
                body: bash(digest_of(t), &format!("touch {marker}")),
            },
        );
        answer(s);
    }
}

/// Unpadded base64url (RFC 4648 §5), for the PKCE challenge.
fn base64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}
