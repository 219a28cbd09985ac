//! The audit line of a revocation through the controller's admin listener, read as the
//! binary's text format writes it: it names the caller, never a token. Alone in its test
//! binary, so that no other test registers the same log call sites while the line is
//! captured (tracing caches which subscribers want a call site, process-wide).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{Method, Request};
use http_body_util::Full;
use tollgate_controller::admin::{AdminServer, IndexTokenContext};
use tollgate_controller::auth::{Access, AccessReviewer, AuthError, Identity, TokenReviewer};
use tollgate_controller::index::{Index, SharedIndex};
use tollgate_store::MemoryStore;

/// The bearer token `token-of-alice` is alice's; she may revoke.
struct Alice;

impl TokenReviewer for Alice {
    fn review<'a>(
        &'a self,
        token: &'a str,
        _audience: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<Identity>, AuthError>> {
        let who = (token == "token-of-alice").then(|| Identity {
            username: "alice".into(),
            extra: BTreeMap::new(),
            ..Default::default()
        });
        Box::pin(std::future::ready(Ok(who)))
    }
}

impl AccessReviewer for Alice {
    fn allowed<'a>(
        &'a self,
        _who: &'a Identity,
        access: &'a Access,
    ) -> BoxFuture<'a, Result<bool, AuthError>> {
        let granted = ["delete", "deletecollection"].contains(&access.verb);
        Box::pin(std::future::ready(Ok(granted)))
    }
}

#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The status of `request`, and its one audit line.
async fn revoke(server: &AdminServer<MemoryStore>, request: Request<Full<Bytes>>) -> (u16, String) {
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);
    let status = server.handle(request).await.status().as_u16();
    drop(guard);
    let logs = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    for secret in ["token-of-alice", "the-access-token-itself"] {
        assert!(!logs.contains(secret), "{secret} in {logs}");
    }
    let audit: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("tollgate::audit"))
        .collect();
    let [line] = audit[..] else {
        panic!("one audit line in:\n{logs}");
    };
    (status, line.to_owned())
}

fn request(method: Method, path: &str, token: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))
        .unwrap()
}

#[tokio::test]
async fn a_revocation_is_audited_naming_the_caller_never_a_token() {
    let alice = Arc::new(Alice);
    let server = AdminServer::new(
        MemoryStore::new(),
        alice.clone(),
        alice,
        Arc::new(IndexTokenContext(SharedIndex::new(Index::new(1)))),
    );

    // Kong's admin API, the token itself in the id's place, as Kong accepts it.
    let (_, line) = revoke(
        &server,
        request(
            Method::DELETE,
            "/default/oauth2_tokens/the-access-token-itself",
            "token-of-alice",
        ),
    )
    .await;
    for part in [
        "WARN tollgate::audit",
        "event=\"admin_revocation\"",
        "api=\"kong\"",
        "caller=user \"alice\"",
        "namespace=default",
        "kind=\"one\"",
    ] {
        assert!(line.contains(part), "{part} in {line}");
    }

    // The aggregated API, as `kubectl delete oauthtokens --all` sends it.
    let (status, line) = revoke(
        &server,
        request(
            Method::DELETE,
            "/apis/tokens.oauth.tollgate.dev/v1alpha1/namespaces/default/oauthtokens",
            "token-of-alice",
        ),
    )
    .await;
    assert_eq!(status, 200);
    for part in [
        "api=\"kubernetes\"",
        "caller=user \"alice\"",
        "kind=\"collection\"",
        "dry_run=false",
        "status=200",
    ] {
        assert!(line.contains(part), "{part} in {line}");
    }
}
