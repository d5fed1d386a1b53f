//! A lean load generator for `bench/run`: std threads, one raw HTTP/1.1 keep-alive connection
//! per thread, no async runtime (so the generator costs as little CPU as possible next to the
//! server it measures). It also measures the floor: the same shell spawned in a loop by a
//! minimal program.
//!
//! ```text
//! mymcp-loadgen http  ADDR TOKEN CONCURRENCY SECONDS JSON_BODY
//! mymcp-loadgen spawn SHELL COMMAND CONCURRENCY SECONDS
//! ```
//!
//! Both print one line: `ops=<n> secs=<s> rate=<ops/s> mean_ms=<ms> p50_ms=<ms> p99_ms=<ms>
//! bytes=<response bytes per op>`.

#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: mymcp-loadgen http ADDR TOKEN CONCURRENCY SECONDS JSON_BODY | spawn SHELL COMMAND CONCURRENCY SECONDS | pingpong SECONDS [same-cpu|other-cpu]";
    let result = match args.get(1).map(String::as_str) {
        Some("http") if args.len() == 7 => {
            let (addr, token, body) = (args[2].clone(), args[3].clone(), args[6].clone());
            run(&args[4], &args[5], move || {
                let mut client = HttpClient::connect(&addr, &token);
                let body = body.clone();
                move || client.call(&body)
            })
        }
        Some("spawn") if args.len() == 6 => {
            let (shell, command) = (args[2].clone(), args[3].clone());
            run(&args[4], &args[5], move || {
                let (shell, command) = (shell.clone(), command.clone());
                move || {
                    let out = Command::new(&shell)
                        .arg("-c")
                        .arg(&command)
                        .stdin(Stdio::null())
                        .output()
                        .expect("spawn");
                    assert!(out.status.success(), "command failed: {out:?}");
                    out.stdout.len() + out.stderr.len()
                }
            })
        }
        // The floor of the privilege boundary: one small message to another process over a
        // Unix socket and one back, with the kernel placing both (or pinned to one CPU, or to
        // two).
        Some("pingpong") if (3..=4).contains(&args.len()) => {
            let pin = args.get(3).map(String::as_str);
            let (mine, theirs) = std::os::unix::net::UnixStream::pair().expect("socketpair");
            let mut echo = Command::new(std::env::current_exe().expect("own path"));
            echo.arg("echo")
                .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)));
            match pin {
                None => {}
                Some("same-cpu") => {
                    pin_to(0);
                    echo.env("MYMCP_LOADGEN_CPU", "0");
                }
                Some("other-cpu") => {
                    pin_to(0);
                    echo.env("MYMCP_LOADGEN_CPU", "1");
                }
                Some(other) => {
                    eprintln!("unknown placement {other:?}\n{usage}");
                    std::process::exit(2);
                }
            }
            let mut child = echo.spawn().expect("spawn the echo process");
            let mine = std::sync::Arc::new(std::sync::Mutex::new(Some(mine)));
            let result = run("1", &args[2], move || {
                let mut s = mine.lock().unwrap().take().expect("one worker");
                move || {
                    let mut buf = [0u8; 64];
                    s.write_all(&buf[..32]).expect("ping");
                    s.read_exact(&mut buf[..16]).expect("pong");
                    16
                }
            });
            let _ = child.wait();
            result
        }
        Some("echo") => {
            if let Some(cpu) = std::env::var("MYMCP_LOADGEN_CPU")
                .ok()
                .and_then(|c| c.parse().ok())
            {
                pin_to(cpu);
            }
            let mut socket = std::os::unix::net::UnixStream::from(
                std::os::fd::AsFd::as_fd(&std::io::stdin())
                    .try_clone_to_owned()
                    .expect("stdin is the socket"),
            );
            let mut buf = [0u8; 32];
            while socket.read_exact(&mut buf).is_ok() {
                if socket.write_all(&buf[..16]).is_err() {
                    break;
                }
            }
            return;
        }
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    };
    println!("{result}");
}

/// Runs `make()`'s operation in a loop on `concurrency` threads for `seconds` (after a short
/// warm-up) and summarizes.
/// Pins this process to one CPU (wrapping around on machines with fewer).
fn pin_to(cpu: usize) {
    if let Err(e) = mymcp_sys::testing::pin_to_cpu(cpu) {
        panic!("sched_setaffinity: {e}");
    }
}

fn run<F, Op>(concurrency: &str, seconds: &str, make: F) -> String
where
    F: Fn() -> Op + Send + Sync + Clone + 'static,
    Op: FnMut() -> usize,
{
    let concurrency: usize = concurrency.parse().expect("concurrency");
    let seconds: f64 = seconds.parse().expect("seconds");
    let warmup = Duration::from_millis(300);
    let start = Instant::now() + warmup;
    let end = start + Duration::from_secs_f64(seconds);
    let threads: Vec<_> = (0..concurrency)
        .map(|_| {
            let make = make.clone();
            std::thread::spawn(move || {
                let mut op = make();
                let mut latencies = Vec::new();
                let mut bytes = 0;
                loop {
                    let t = Instant::now();
                    if t >= end {
                        break;
                    }
                    let n = op();
                    if t >= start {
                        latencies.push(t.elapsed());
                        bytes = n;
                    }
                }
                (latencies, bytes)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut bytes = 0;
    for t in threads {
        let (l, b) = t.join().expect("worker");
        all.extend(l);
        bytes = bytes.max(b);
    }
    all.sort();
    let ops = all.len();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let pct = |p: f64| all.get(((ops as f64 * p) as usize).min(ops.saturating_sub(1)));
    let mean = all.iter().sum::<Duration>().as_secs_f64() * 1000.0 / ops.max(1) as f64;
    format!(
        "ops={ops} secs={seconds} rate={:.1} mean_ms={mean:.3} p50_ms={:.3} p99_ms={:.3} bytes={bytes}",
        ops as f64 / seconds,
        pct(0.5).map_or(0.0, |d| ms(*d)),
        pct(0.99).map_or(0.0, |d| ms(*d)),
    )
}

/// One keep-alive connection to the frontend.
struct HttpClient {
    addr: String,
    token: String,
    reader: BufReader<TcpStream>,
}

impl HttpClient {
    fn connect(addr: &str, token: &str) -> HttpClient {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        HttpClient {
            addr: addr.to_owned(),
            token: token.to_owned(),
            reader: BufReader::new(stream),
        }
    }

    /// Posts `body` to /mcp and reads the whole response; returns the body's length.
    fn call(&mut self, body: &str) -> usize {
        let request = format!(
            "POST /mcp HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\n\
             Accept: application/json, text/event-stream\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            self.token,
            body.len()
        );
        self.reader
            .get_mut()
            .write_all(request.as_bytes())
            .expect("send");
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("status line");
        assert!(
            line.starts_with("HTTP/1.1 200"),
            "unexpected status: {line:?}"
        );
        let mut length = None;
        let mut chunked = false;
        loop {
            line.clear();
            self.reader.read_line(&mut line).expect("header");
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':').expect("header line");
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.trim().parse::<usize>().expect("length"));
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.to_ascii_lowercase().contains("chunked");
            }
        }
        let mut body = Vec::new();
        if let Some(n) = length {
            body.resize(n, 0);
            self.reader.read_exact(&mut body).expect("body");
        } else if chunked {
            loop {
                line.clear();
                self.reader.read_line(&mut line).expect("chunk size");
                let n = usize::from_str_radix(line.trim(), 16).expect("chunk size");
                let mut chunk = vec![0; n + 2];
                self.reader.read_exact(&mut chunk).expect("chunk");
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        } else {
            panic!("response without a length");
        }
        // A failed tool call would make the numbers meaningless.
        assert!(
            !body.windows(14).any(|w| w == b"\"isError\":true"),
            "tool call failed: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        );
        body.len()
    }
}
