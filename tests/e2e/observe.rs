//! Seeing every request: `--access-log json` read from the binary's stdout, the audit lines
//! on stderr, the ids the application receives, and `/metrics` after a token request, a 401
//! and an `invalid_client`, all through the real listener over TLS.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{SidecarBuilder, Upstream, article_manifests};

/// The access lines written so far, once at least `count` are (lines are written as each
/// response's head is, so the last may trail the client's answer by a moment).
async fn access_lines(sidecar: &crate::harness::Sidecar, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = sidecar.stdout();
        let lines: Vec<&str> = text.lines().collect();
        if lines.len() >= count {
            return lines
                .iter()
                .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
                .collect();
        }
        assert!(
            Instant::now() < deadline,
            "{count} lines not written:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of the sample named exactly `series` in a scrape.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_metrics_and_audit_lines_see_every_request_and_no_secret() {
    let upstream = Upstream::start().await;
    let sidecar = SidecarBuilder::new(article_manifests(upstream.port, ""))
        .arg("--access-log")
        .arg("json")
        .start()
        .await;
    let token = sidecar.password_grant().await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();

    // The token in the header, with the client's request id and trace; then in the query.
    let answer = sidecar
        .client
        .get(sidecar.url("/event/1"))
        .bearer_auth(&token)
        .header("x-request-id", "e2e-request-1")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let seen = upstream.last();
    assert_eq!(seen.header("x-request-id"), Some("e2e-request-1"));
    let traceparent = seen.header("traceparent").unwrap();
    assert!(traceparent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
    assert!(!traceparent.contains("00f067aa0ba902b7"), "{traceparent}");
    let by_query = sidecar
        .client
        .get(sidecar.url(&format!("/event/1?access_token={token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(by_query.status(), 200);
    let generated_id = upstream.last().header("x-request-id").unwrap().to_owned();

    // A 401, and an invalid_client whose claimed id is logged but never its secret.
    let refused = sidecar
        .client
        .get(sidecar.url("/event/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let invalid_client = sidecar
        .client
        .post(sidecar.url("/event/oauth2/token"))
        .basic_auth("clientid", Some("not-the-secret"))
        .form(&[
            ("grant_type", "password"),
            ("provision_key", "provisionkey"),
            ("authenticated_userid", "1"),
        ])
        .send()
        .await
        .unwrap();
    let status = invalid_client.status();
    let body: Value = invalid_client.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client", "{status} {body}");

    let lines = access_lines(&sidecar, 5).await;
    let stdout = sidecar.stdout();
    for secret in [
        token.as_str(),
        "clientsecret",
        "provisionkey",
        "not-the-secret",
    ] {
        assert!(
            !stdout.contains(secret),
            "{secret} in the access log:\n{stdout}"
        );
    }
    assert_eq!(lines[0]["route"], "token");
    assert_eq!(lines[0]["status"], 200);
    let header = &lines[1];
    assert_eq!(header["request_id"], "e2e-request-1");
    assert_eq!(header["path"], "/event/1");
    assert_eq!(header["service"], "default/sampleirisservice");
    assert_eq!(header["consumer"], "ClientApp");
    assert_eq!(header["client_id"], "clientid");
    assert_eq!(header["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert!(header["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(header["upstream_ms"].is_number(), "{header}");
    assert_eq!(lines[2]["request_id"], generated_id.as_str());
    assert_eq!(lines[2]["path"], "/event/1", "never the query");
    assert_eq!(lines[3]["status"], 401);
    assert_eq!(lines[4]["route"], "token");
    assert_eq!(lines[4]["status"], status.as_u16());

    // The audit line is on stderr, with the client id it claimed and not its secret.
    let logs = sidecar.logs();
    let audit = logs
        .lines()
        .find(|line| line.contains("client_authentication_failed"))
        .unwrap_or_else(|| panic!("no audit line in:\n{logs}"));
    assert!(audit.contains("tollgate::audit"), "{audit}");
    assert!(audit.contains("clientid"), "{audit}");
    assert!(!logs.contains("not-the-secret"), "the secret in the logs");
    assert!(!logs.contains(&token), "the token in the logs");

    let metrics = reqwest::get(format!("http://{}/metrics", sidecar.metrics))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let duration = |route: &str, class: &str| {
        format!(
            "tollgate_request_duration_seconds_count{{namespace=\"default\",service=\"sampleirisservice\",route=\"{route}\",status=\"{class}\"}}"
        )
    };
    assert_eq!(
        sample(&metrics, &duration("proxy", "2xx")),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, &duration("proxy", "4xx")),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, &duration("token", "2xx")),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, &duration("token", "4xx")),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "tollgate_token_requests_total{grant=\"password\",error=\"none\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "tollgate_token_requests_total{grant=\"password\",error=\"invalid_client\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    assert!(sample(&metrics, "process_resident_memory_bytes").unwrap() > 0.0);
    assert!(sample(&metrics, "process_open_fds").unwrap() > 0.0);
    assert!(metrics.contains("tollgate_build_info{"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_is_off_by_default_and_admin_revocations_are_audited() {
    let upstream = Upstream::start().await;
    let sidecar = SidecarBuilder::new(article_manifests(upstream.port, ""))
        .start()
        .await;
    let token = sidecar.password_grant().await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let answer = sidecar.get_with_token("/event/1", &token).await;
    assert_eq!(answer.status(), 200);
    let revoked = sidecar
        .client
        .delete(sidecar.admin_url("/default/oauth2_tokens?authenticated_userid=1"))
        .send()
        .await
        .unwrap();
    assert!(revoked.status().is_success(), "{}", revoked.status());
    assert_eq!(sidecar.stdout(), "", "no access line by default");
    let logs = sidecar.logs();
    let audit = logs
        .lines()
        .find(|line| line.contains("admin_revocation"))
        .unwrap_or_else(|| panic!("no audit line in:\n{logs}"));
    assert!(audit.contains("default"), "{audit}");
    assert!(!audit.contains(&token), "{audit}");
}
