//! The executor client: multiplexing, fail-fast while down, reconnection, and failing pending
//! requests when the connection drops.

mod support;

use mymcp_frontend::bearer::token_digest;
use mymcp_frontend::forward::{ForwardError, Forwarder};
use mymcp_protocol::{
    BashExecute, CallOrigin, ClientFrame, FrontendRequest, FrontendResponse, ReadFile, Role,
    ToolCall, ToolOutput,
};
use std::time::Duration;
use support::{FakeExecutor, Greeting, TempDir, RO_TOKEN, RW_TOKEN};

const WAIT: Duration = Duration::from_secs(5);

fn identify(token: &str) -> FrontendRequest {
    FrontendRequest::Identify {
        token: token_digest(token.as_bytes()),
    }
}

fn call(token: &str, call: ToolCall) -> FrontendRequest {
    FrontendRequest::Call {
        token: token_digest(token.as_bytes()),
        origin: CallOrigin {
            peer: "127.0.0.1".into(),
            request_id: "test".into(),
        },
        call,
    }
}

fn read_file(path: &str) -> ToolCall {
    ToolCall::ReadFile(ReadFile {
        file_path: path.into(),
        offset: None,
        limit: None,
    })
}

fn hang() -> ToolCall {
    ToolCall::BashExecute(BashExecute {
        command: "hang".into(),
        timeout: None,
        working_dir: None,
        max_output_bytes: None,
        background: false,
        handoff_after: None,
    })
}

#[tokio::test]
async fn identify_answers_with_the_executors_identity() {
    let executor = FakeExecutor::start();
    let fwd = Forwarder::new(&executor.socket);
    assert!(fwd.wait_connected(WAIT).await);
    match fwd.request(identify(RW_TOKEN)).await.unwrap() {
        FrontendResponse::Identity(i) => assert_eq!(i.role, Role::Rw),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        fwd.request(identify("nobody")).await.unwrap(),
        FrontendResponse::Unauthenticated
    );
}

#[tokio::test]
async fn concurrent_requests_each_get_their_own_answer() {
    let executor = FakeExecutor::start();
    let fwd = Forwarder::new(&executor.socket);
    assert!(fwd.wait_connected(WAIT).await);
    let mut tasks = Vec::new();
    for n in 0..64 {
        let fwd = fwd.clone();
        tasks.push(tokio::spawn(async move {
            let path = format!("/file/{n}");
            let answer = fwd.request(call(RO_TOKEN, read_file(&path))).await.unwrap();
            match answer {
                FrontendResponse::Tool(Ok(ToolOutput::ReadFile(r))) => {
                    assert_eq!(r.content, format!("   1\t{path}"))
                }
                other => panic!("{other:?}"),
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn requests_fail_fast_while_the_executor_is_absent() {
    let dir = TempDir::new();
    let fwd = Forwarder::new(dir.path().join("executor.sock"));
    assert!(!fwd.wait_connected(Duration::from_millis(200)).await);
    let answer = tokio::time::timeout(WAIT, fwd.request(identify(RO_TOKEN)))
        .await
        .expect("must not queue while down");
    assert!(matches!(answer, Err(ForwardError::Unavailable)));
    assert!(!fwd.is_connected());
}

#[tokio::test]
async fn an_executor_that_refuses_our_hello_is_never_used() {
    let executor = FakeExecutor::start_in(TempDir::new(), Greeting::Refuse);
    let fwd = Forwarder::new(&executor.socket);
    assert!(!fwd.wait_connected(Duration::from_millis(500)).await);
    assert!(matches!(
        fwd.request(identify(RO_TOKEN)).await,
        Err(ForwardError::Unavailable)
    ));
}

#[tokio::test]
async fn pending_requests_fail_when_the_connection_drops_and_it_comes_back() {
    let mut executor = FakeExecutor::start();
    let fwd = Forwarder::new(&executor.socket);
    assert!(fwd.wait_connected(WAIT).await);

    let pending = tokio::spawn({
        let fwd = fwd.clone();
        async move { fwd.request(call(RW_TOKEN, hang())).await }
    });
    assert!(matches!(
        executor.next_frame().await,
        ClientFrame::Request { .. }
    ));

    // The executor goes away: the waiting request fails instead of hanging.
    let dir = executor.stop();
    let answer = tokio::time::timeout(WAIT, pending).await.unwrap().unwrap();
    assert!(matches!(answer, Err(ForwardError::Unavailable)));
    assert!(matches!(
        fwd.request(identify(RO_TOKEN)).await,
        Err(ForwardError::Unavailable)
    ));

    // It comes back at the same path: the forwarder reconnects by itself.
    let _executor = FakeExecutor::start_in(dir, Greeting::Welcome);
    assert!(fwd.wait_connected(WAIT).await, "did not reconnect");
    assert!(matches!(
        fwd.request(identify(RO_TOKEN)).await,
        Ok(FrontendResponse::Identity(_))
    ));
}

#[tokio::test]
async fn a_dropped_request_sends_cancel_and_a_finished_one_does_not() {
    let mut executor = FakeExecutor::start();
    let fwd = Forwarder::new(&executor.socket);
    assert!(fwd.wait_connected(WAIT).await);

    // Finished normally: no cancel follows.
    fwd.request(identify(RO_TOKEN)).await.unwrap();
    assert!(matches!(
        executor.next_frame().await,
        ClientFrame::Request { .. }
    ));

    let hung = fwd.request(call(RW_TOKEN, hang()));
    let abandoned = tokio::time::timeout(Duration::from_millis(100), hung).await;
    assert!(abandoned.is_err(), "a hanging call cannot have an answer");
    let ClientFrame::Request { id, .. } = executor.next_frame().await else {
        panic!("expected the call")
    };
    assert_eq!(executor.next_frame().await, ClientFrame::Cancel { id });

    // The executor's late "Cancelled" answer for that id is ignored, and the link lives on.
    fwd.request(identify(RO_TOKEN)).await.unwrap();
    assert!(fwd.is_connected());
}
