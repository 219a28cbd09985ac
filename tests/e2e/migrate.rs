//! `tollgate migrate kong`: the article's `deck dump` migrated, then served by a standalone
//! sidecar, which runs the article's token flow with the migrated client; exported tokens go
//! through the admin API's import and keep working. A bad file is one message, exit 64.

use std::os::unix::fs::PermissionsExt;
use std::process::Output;

use crate::harness::{EVENT_1, SidecarBuilder, Upstream, tollgate};

const ARTICLE_DECK: &str = include_str!("../../crates/migrate/tests/fixtures/article-deck.yaml");

/// The article's deck dump, forwarding to `port`, with an exported token of its client.
fn article_deck(port: u16) -> String {
    let mut deck = ARTICLE_DECK.replace("port: 52773", &format!("port: {port}"));
    deck.push_str(
        "oauth2_tokens:
- id: 0c9d1a6e-5f0e-4c39-9d55-6b1f9a1f0001
  credential: clientid
  service: SampleIRISService
  access_token: kong-access-token-exported-from-iam
  refresh_token: kong-refresh-token-exported-from-iam
  authenticated_userid: \"1\"
  expires_in: 7200
  token_type: bearer
",
    );
    deck
}

fn migrate(dir: &std::path::Path, deck: &str, extra: &[&str]) -> Output {
    let file = dir.join("kong.yaml");
    std::fs::write(&file, deck).unwrap();
    tollgate()
        .args(["migrate", "kong", "-f"])
        .arg(&file)
        .args(extra)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migrated_deck_dump_serves_the_articles_flow_and_imports_its_tokens() {
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.jsonl");
    let output = migrate(
        dir.path(),
        &article_deck(upstream.port),
        &["--tokens-out", tokens.to_str().unwrap()],
    );
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert_eq!(
        stderr.lines().collect::<Vec<_>>(),
        [
            format!(
                "tollgate migrate kong: Kong service `SampleIRISService`: host `iris` not kept: \
                 the sidecar forwards to 127.0.0.1:{}, the application in its own pod",
                upstream.port
            ),
            format!(
                "tollgate migrate kong: Kong oauth2_tokens: 1 written to {}",
                tokens.display()
            ),
        ]
    );
    assert!(!stderr.contains("kong-access-token"), "a token on stderr");
    assert_eq!(
        std::fs::metadata(&tokens).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let manifests = String::from_utf8(output.stdout).unwrap();

    let sidecar = SidecarBuilder::new(manifests).start().await;
    // The article's password grant, with the migrated client id, secret and provision key.
    let first = sidecar.password_grant().await;
    let access = first["access_token"].as_str().unwrap();
    let response = sidecar.get_with_token("/event/1", access).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), EVENT_1);
    let seen = upstream.last();
    assert_eq!(seen.path_and_query, "/event/1", "strip_path: false kept");
    assert_eq!(seen.header("x-consumer-username"), Some("ClientApp"));
    assert_eq!(seen.header("x-consumer-custom-id"), Some("client-app-7"));
    assert_eq!(seen.header("x-credential-identifier"), Some("clientid"));
    assert_eq!(seen.header("x-authenticated-userid"), Some("1"));
    // The refresh grant, as the article's step 3.
    let response = sidecar
        .client
        .post(sidecar.url("/event/oauth2/token"))
        .json(&serde_json::json!({
            "client_id": "clientid",
            "client_secret": "clientsecret",
            "grant_type": "refresh_token",
            "refresh_token": first["refresh_token"],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // The token exported from Kong: refused until imported, then IAM's clients keep it.
    let kong_token = "kong-access-token-exported-from-iam";
    let response = sidecar.get_with_token("/event/1", kong_token).await;
    assert_eq!(response.status(), 401);
    for line in std::fs::read_to_string(&tokens).unwrap().lines() {
        let response = sidecar
            .client
            .post(sidecar.admin_url("/default/oauth2_tokens"))
            .header("content-type", "application/json")
            .body(line.to_owned())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    }
    let response = sidecar.get_with_token("/event/1", kong_token).await;
    assert_eq!(response.status(), 200);
    assert_eq!(upstream.last().header("x-authenticated-userid"), Some("1"));
}

#[test]
fn json_output_is_a_list_of_the_same_manifests() {
    let dir = tempfile::tempdir().unwrap();
    let output = migrate(dir.path(), ARTICLE_DECK, &["-o", "json", "-n", "iris"]);
    assert_eq!(output.status.code(), Some(0));
    let list: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(list["kind"], "List");
    let kinds: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "OAuthService",
            "Secret",
            "Consumer",
            "OAuthApplication",
            "Secret"
        ]
    );
    for item in list["items"].as_array().unwrap() {
        assert_eq!(item["metadata"]["namespace"], "iris");
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("Kong oauth2_tokens"),
        "the fixture has no tokens: {stderr}"
    );
}

#[test]
fn a_bad_kong_file_is_one_message_naming_it_and_exit_64() {
    let dir = tempfile::tempdir().unwrap();
    let output = migrate(
        dir.path(),
        "_format_version: \"3.0\"\nservices:\n- name: s\n  routes:\n  - paths: /x\n",
        &[],
    );
    assert_eq!(output.status.code(), Some(64));
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "tollgate migrate kong: {}: services[0].routes[0].paths: invalid type",
            dir.path().join("kong.yaml").display()
        )),
        "{stderr}"
    );

    let missing = tollgate()
        .args(["migrate", "kong", "-f", "/nonexistent/kong.yaml"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&missing.stderr)
            .starts_with("tollgate migrate kong: /nonexistent/kong.yaml: cannot read it"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
}

#[test]
fn tokens_out_never_overwrites_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.jsonl");
    std::fs::write(&tokens, "keep me").unwrap();
    let output = migrate(
        dir.path(),
        &article_deck(52773),
        &["--tokens-out", tokens.to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--tokens-out"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(std::fs::read_to_string(&tokens).unwrap(), "keep me");
}
