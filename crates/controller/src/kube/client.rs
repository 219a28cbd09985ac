//! The controller's client of the API server: the kubeconfig's or the pod's, without kube's
//! default retries. kube retries a 429, 503 or 504 up to 15 times, backing off to 1000 s: a
//! Lease renewal would outlive the Lease, and an admin request would wait minutes on its
//! TokenReview. Every caller here already retries on its own schedule (the Lease every
//! `LEASE_RETRY`, watches with backoff, status on the next round) or answers its client.

use kube::{Client, Config};

/// A client of the kubeconfig's context or of the pod's ServiceAccount.
pub async fn api_client() -> anyhow::Result<Client> {
    use anyhow::Context as _;
    let config = Config::infer()
        .await
        .context("cannot reach the API server (kubeconfig or in-cluster configuration)")?;
    client_without_retries(config)
        .context("cannot reach the API server (kubeconfig or in-cluster configuration)")
}

/// The client of `config`, each request sent once.
pub fn client_without_retries(mut config: Config) -> kube::Result<Client> {
    config.default_retry = false;
    Client::try_from(config)
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    /// An API server that answers every request 503, counting them.
    fn unavailable_api_server() -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(AtomicUsize::new(0));
        let counted = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                // The head, to its blank line; a GET has no body.
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                    if line == "\r\n" {
                        counted.fetch_add(1, Ordering::SeqCst);
                        let body = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"ServiceUnavailable","code":503}"#;
                        let _ = write!(
                            stream,
                            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                    }
                    line.clear();
                }
            }
        });
        (url, seen)
    }

    #[tokio::test]
    async fn a_503_is_answered_at_once_not_retried() {
        let (url, seen) = unavailable_api_server();
        let client = client_without_retries(Config::new(url.parse().unwrap())).unwrap();
        let request = http::Request::get("/apis/coordination.k8s.io/v1/namespaces/x/leases/y")
            .body(Vec::new())
            .unwrap();
        // A ceiling only: kube's default policy would retry for minutes.
        let answer = tokio::time::timeout(Duration::from_secs(30), client.request_text(request))
            .await
            .expect("the request was retried");
        assert!(answer.is_err(), "{answer:?}");
        assert_eq!(seen.load(Ordering::SeqCst), 1);
    }
}
