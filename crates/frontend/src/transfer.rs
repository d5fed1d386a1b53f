//! `PUT`/`GET`/`HEAD /files/raw/{ticket}`: redeeming transfer tickets.
//!
//! The ticket's HMAC and expiry are checked here first ([`crate::tickets`]): a forged, altered
//! or expired ticket, or a method that does not match its direction, is answered without
//! asking the executor. Then the executor redeems the grant ([`Forwarder::redeem`]) and hands
//! over one end of a pipe; this module only moves bytes between that pipe and the HTTP body,
//! a chunk at a time, so memory stays flat whatever the size:
//!
//! - `PUT`: nothing of the body is read before the ticket is verified and the executor has
//!   redeemed the grant. Then each body chunk is written into the pipe. When the body ends
//!   normally the pipe is closed and the executor told to commit (`CommitUpload`); if the body
//!   fails (the client went away) or is silent for the body idle timeout
//!   (`MYMCP_BODY_IDLE_TIMEOUT_SEC`; an upload has no deadline as a whole), the request is
//!   dropped, which cancels it and the executor discards the upload. If the executor stops
//!   reading (too large), the write fails and its answer says why.
//! - `GET`: the response (`Content-Length` = the size the executor reports,
//!   `application/octet-stream`, `Content-Disposition`) streams from the pipe; a pipe that ends
//!   early fails the body, so the client sees a cut transfer, never a short file.
//! - `HEAD`: the executor checks the grant without spending it (`Probe`) and reports the size.
//!
//! Errors are the reference's `{"ok":false,"error":…,"hint":…}` bodies; the statuses are in
//! [`status`].

use crate::body::{self, BodyError};
use crate::forward::{Finish, ForwardError, Forwarder, Redeemed};
use crate::request_id::RequestId;
use crate::tickets::{Ticket, TicketError, Tickets};
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use mymcp_protocol::{
    CallOrigin, Direction, FrontendRequest, FrontendResponse, TransferError, TransferErrorKind,
    TransferStart,
};
use serde::Serialize;
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;

/// Largest chunk read from a download pipe at once.
const CHUNK: usize = 256 * 1024;

/// What the transfer routes need.
#[derive(Clone, Debug)]
pub struct TransferState {
    pub forwarder: Arc<Forwarder>,
    pub tickets: Arc<Tickets>,
    /// The longest silence of an upload body.
    pub body_idle_timeout: Duration,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    ok: bool,
    error: &'a str,
    hint: &'a str,
}

#[derive(Serialize)]
struct UploadBody<'a> {
    ok: bool,
    path: &'a str,
    bytes_written: u64,
    sha256: &'a str,
}

/// The HTTP status of each refusal. Where the reference defines one it is kept (404 unknown,
/// 410 expired, 405 wrong method, 403 protected, 413 too large); `ticket_used` is 409 (the
/// reference said 410 `ticket_not_found`), and the new cases get the closest status.
pub fn status(kind: TransferErrorKind) -> StatusCode {
    use TransferErrorKind as K;
    match kind {
        K::Disabled | K::NotFound | K::PathNotFound => StatusCode::NOT_FOUND,
        K::Expired => StatusCode::GONE,
        K::Used | K::InUse | K::Exists => StatusCode::CONFLICT,
        K::WrongMethod => StatusCode::METHOD_NOT_ALLOWED,
        K::Protected => StatusCode::FORBIDDEN,
        K::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        K::Sha256Mismatch => StatusCode::UNPROCESSABLE_ENTITY,
        K::Aborted => StatusCode::BAD_REQUEST,
        K::Stalled => StatusCode::REQUEST_TIMEOUT,
        K::Busy | K::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        K::WriteFailed | K::ReadFailed | K::AuditFailed | K::Internal => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

fn error_response(status: StatusCode, error: &str, hint: &str) -> Response {
    let mut response = (
        status,
        Json(ErrorBody {
            ok: false,
            error,
            hint,
        }),
    )
        .into_response();
    if status == StatusCode::METHOD_NOT_ALLOWED {
        // Filled in by the caller that knows the ticket's direction; a safe default here.
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, PUT"));
    }
    response
}

fn refusal(e: &TransferError) -> Response {
    error_response(status(e.kind), e.kind.as_str(), &e.hint)
}

fn wrong_method(direction: Direction) -> Response {
    let (hint, allow) = match direction {
        Direction::Upload => ("This ticket requires PUT.", "PUT"),
        Direction::Download => ("This ticket requires GET.", "GET, HEAD"),
    };
    let mut response = error_response(StatusCode::METHOD_NOT_ALLOWED, "wrong_method", hint);
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

fn unavailable() -> Response {
    let mut response = error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "executor_unavailable",
        "The server is restarting; try again in a moment.",
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

fn bad_gateway() -> Response {
    error_response(
        StatusCode::BAD_GATEWAY,
        "internal_error",
        "Unexpected executor response.",
    )
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Every method on `/files/raw/{ticket}`.
pub async fn raw(
    State(state): State<TransferState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    Path(ticket): Path<String>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let ticket = match state.tickets.verify(&ticket, now_unix()) {
        Ok(t) => t,
        Err(TicketError::Unknown) => {
            return error_response(
                StatusCode::NOT_FOUND,
                "ticket_not_found",
                "Mint a new ticket.",
            )
        }
        Err(TicketError::Expired) => {
            return error_response(StatusCode::GONE, "ticket_expired", "Mint a new ticket.")
        }
    };
    let origin = CallOrigin {
        peer: peer.ip().to_canonical().to_string(),
        request_id,
    };
    match (method, ticket.direction) {
        (Method::PUT, Direction::Upload) => upload(&state, ticket, origin, &headers, body).await,
        (Method::GET, Direction::Download) => download(&state, ticket, origin).await,
        (Method::HEAD, Direction::Download) => head(&state, ticket, origin).await,
        (_, direction) => wrong_method(direction),
    }
}

async fn upload(
    state: &TransferState,
    ticket: Ticket,
    origin: CallOrigin,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let announced_len = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let request = FrontendRequest::Redeem {
        grant: ticket.grant,
        direction: Direction::Upload,
        announced_len,
        origin,
    }
    .with_trace(crate::otel::current_wire());
    let (start, pipe, mut finish) = match state.forwarder.redeem(request).await {
        Ok(Redeemed::Started {
            start,
            pipe,
            finish,
        }) => (start, pipe, finish),
        Ok(Redeemed::Answer(answer)) => return finished(answer),
        Err(_) => return unavailable(),
    };
    match feed(pipe, body, state.body_idle_timeout).await {
        Fed::All => {
            // The body ended normally: the executor may commit once the pipe is drained.
            let commit = FrontendRequest::CommitUpload {
                grant: ticket.grant,
                claim: start.claim,
            };
            if state.forwarder.request(commit).await.is_err() {
                return unavailable();
            }
        }
        // The executor stopped reading; its answer says why.
        Fed::Refused => {}
        Fed::Cut(e) => {
            tracing::info!("upload body failed: {e}");
            // Dropping `finish` cancels the upload; the temporary file goes with it.
            drop(finish);
            return error_response(
                StatusCode::BAD_REQUEST,
                "stream_aborted",
                "The upload body was cut short; nothing was written. Retry with the same URL.",
            );
        }
        Fed::Stalled => {
            tracing::info!(
                "upload body silent for {:?}; abandoned",
                state.body_idle_timeout
            );
            drop(finish);
            return error_response(
                StatusCode::REQUEST_TIMEOUT,
                "stream_stalled",
                "No upload data arrived for too long; nothing was written. Retry with the same URL.",
            );
        }
    }
    match finish.answer().await {
        Ok(answer) => finished(answer),
        Err(_) => unavailable(),
    }
}

/// How feeding an upload body into the pipe ended.
enum Fed {
    /// The body ended normally and all of it went into the pipe.
    All,
    /// The executor closed its end (it refused the rest).
    Refused,
    /// The body failed: the client went away or sent garbage.
    Cut(String),
    /// The body was silent for longer than the idle timeout.
    Stalled,
}

async fn feed(pipe: OwnedFd, mut body: Body, idle: Duration) -> Fed {
    let mut tx = match pipe::Sender::from_owned_fd(pipe) {
        Ok(tx) => tx,
        Err(e) => return Fed::Cut(format!("not a pipe: {e}")),
    };
    loop {
        match body::next_data(&mut body, idle, None).await {
            Ok(None) => break,
            Ok(Some(data)) => {
                if tx.write_all(&data).await.is_err() {
                    return Fed::Refused;
                }
            }
            Err(BodyError::TimedOut) => return Fed::Stalled,
            Err(BodyError::Failed(e)) => return Fed::Cut(e),
            Err(BodyError::TooLarge) => return Fed::Refused,
        }
    }
    drop(tx);
    Fed::All
}

/// The HTTP response for the executor's final answer to a redeem.
fn finished(answer: FrontendResponse) -> Response {
    match answer {
        FrontendResponse::Transfer(Ok(done)) => match done.sha256.as_deref() {
            Some(sha256) => Json(UploadBody {
                ok: true,
                path: &done.path,
                bytes_written: done.bytes,
                sha256,
            })
            .into_response(),
            // A download's answer only ever ends its body; see `PipeBody`.
            None => bad_gateway(),
        },
        FrontendResponse::Transfer(Err(e)) | FrontendResponse::TransferProbe(Err(e)) => refusal(&e),
        other => {
            tracing::error!("executor answered a redeem with {other:?}");
            bad_gateway()
        }
    }
}

/// The headers of a download (for `GET` and `HEAD`).
fn download_headers(start: &TransferStart) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from(start.size.unwrap_or(0)),
    );
    if let Ok(v) = HeaderValue::from_str(&content_disposition(&start.file_name)) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers
}

async fn download(state: &TransferState, ticket: Ticket, origin: CallOrigin) -> Response {
    let request = FrontendRequest::Redeem {
        grant: ticket.grant,
        direction: Direction::Download,
        announced_len: None,
        origin,
    }
    .with_trace(crate::otel::current_wire());
    let (start, pipe, finish) = match state.forwarder.redeem(request).await {
        Ok(Redeemed::Started {
            start,
            pipe,
            finish,
        }) => (start, pipe, finish),
        Ok(Redeemed::Answer(answer)) => return finished(answer),
        Err(_) => return unavailable(),
    };
    let rx = match pipe::Receiver::from_owned_fd(pipe) {
        Ok(rx) => rx,
        Err(e) => {
            tracing::error!("executor passed something that is not a pipe: {e}");
            return bad_gateway();
        }
    };
    let headers = download_headers(&start);
    let body = PipeBody {
        rx,
        remaining: start.size.unwrap_or(0),
        finish: Some(Box::pin(async move {
            let mut finish = finish;
            finish.answer().await
        })),
        _finish: std::marker::PhantomData,
    };
    (StatusCode::OK, headers, Body::new(body)).into_response()
}

async fn head(state: &TransferState, ticket: Ticket, origin: CallOrigin) -> Response {
    let request = FrontendRequest::Probe {
        grant: ticket.grant,
        direction: Direction::Download,
        origin,
    };
    match state.forwarder.request(request).await {
        Ok(FrontendResponse::TransferProbe(Ok(start))) => {
            (StatusCode::OK, download_headers(&start)).into_response()
        }
        Ok(answer) => finished(answer),
        Err(ForwardError::Unavailable) | Err(ForwardError::Encode(_)) => unavailable(),
    }
}

type Answer = Pin<Box<dyn Future<Output = Result<FrontendResponse, ForwardError>> + Send>>;

/// A download body: chunks read from the pipe until `remaining` is zero, then the executor's
/// final answer. Dropping it (the client went away) drops the pipe and the request, which
/// stops the executor.
struct PipeBody {
    rx: pipe::Receiver,
    remaining: u64,
    finish: Option<Answer>,
    _finish: std::marker::PhantomData<Finish>,
}

impl http_body::Body for PipeBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        let this = &mut *self;
        while this.remaining > 0 {
            match this.rx.poll_read_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Ok(())) => {}
            }
            let want = (this.remaining as usize).min(CHUNK);
            let mut chunk = Vec::with_capacity(want);
            match this.rx.try_read_buf(&mut chunk) {
                Ok(0) => {
                    return Poll::Ready(Some(Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the executor stopped sending before the end of the file",
                    ))))
                }
                Ok(n) => {
                    this.remaining -= n as u64;
                    return Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from(chunk)))));
                }
                // Readiness was stale; it is cleared now, so polling again registers the waker.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Some(Err(e))),
            }
        }
        // Every byte was delivered; end cleanly once the executor confirms.
        let Some(finish) = this.finish.as_mut() else {
            return Poll::Ready(None);
        };
        match finish.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(answer) => {
                this.finish = None;
                match answer {
                    Ok(FrontendResponse::Transfer(Ok(_))) => Poll::Ready(None),
                    other => Poll::Ready(Some(Err(std::io::Error::other(format!(
                        "download did not complete: {other:?}"
                    ))))),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0 && self.finish.is_none()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}

/// `attachment; filename="<ASCII>"; filename*=UTF-8''<percent-encoded>` as the reference
/// builds it: control characters dropped, `\` and `"` escaped, non-ASCII left out of the
/// quoted form.
pub fn content_disposition(name: &str) -> String {
    let clean: String = name.chars().filter(|c| !c.is_control()).collect();
    let mut quoted = String::new();
    for c in clean.chars().filter(char::is_ascii) {
        if c == '\\' || c == '"' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    let mut encoded = String::new();
    for b in clean.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("attachment; filename=\"{quoted}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_disposition_is_safe_for_any_name() {
        assert_eq!(
            content_disposition("a b.txt"),
            "attachment; filename=\"a b.txt\"; filename*=UTF-8''a%20b.txt"
        );
        assert_eq!(
            content_disposition("x\"y\\z\r\n.bin"),
            "attachment; filename=\"x\\\"y\\\\z.bin\"; filename*=UTF-8''x%22y%5Cz.bin"
        );
        assert_eq!(
            content_disposition("über.txt"),
            "attachment; filename=\"ber.txt\"; filename*=UTF-8''%C3%BCber.txt"
        );
        assert!(HeaderValue::from_str(&content_disposition("\u{7f}ä\"\n")).is_ok());
    }

    #[test]
    fn statuses_follow_the_documented_table() {
        use TransferErrorKind as K;
        for (kind, code) in [
            (K::NotFound, 404),
            (K::Disabled, 404),
            (K::Expired, 410),
            (K::Used, 409),
            (K::InUse, 409),
            (K::WrongMethod, 405),
            (K::Protected, 403),
            (K::TooLarge, 413),
            (K::Sha256Mismatch, 422),
            (K::Exists, 409),
            (K::PathNotFound, 404),
            (K::WriteFailed, 500),
            (K::AuditFailed, 500),
        ] {
            assert_eq!(status(kind).as_u16(), code, "{kind}");
        }
    }
}
