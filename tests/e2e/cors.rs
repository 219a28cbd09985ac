//! Browser clients (issue 18, part 5): curl plays the browser over TLS, sending a preflight
//! and then the real cross-origin request, to the token endpoint and to a protected route.

use crate::harness::{Sidecar, SidecarBuilder, Upstream, article_manifests};
use std::collections::BTreeMap;

const APP: &str = "https://app.example.com";

/// The article's objects, the service with a `cors` block for `APP` and a regex for partners.
fn cors_manifests(upstream_port: u16) -> String {
    article_manifests(upstream_port, "").replacen(
        "  oauth2:\n",
        "  cors:\n    origins: [\"https://app.example.com\", \"https://(.*\\\\.)?partner\\\\.example\"]\n    methods: [GET, POST]\n    exposedHeaders: [X-Request-Id]\n    maxAge: 600\n  oauth2:\n",
        1,
    )
}

/// What curl got: the status, the headers (lower-case names, repeated values joined by
/// `, `) and the body.
struct Got {
    status: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

/// curl, awaited: the upstream answers on this test's runtime, which must keep running.
async fn curl(sidecar: &Sidecar, args: &[&str]) -> Got {
    let output = tokio::process::Command::new("curl")
        .args(["-sS", "-i", "--cacert"])
        .arg(sidecar.cert_pem_file())
        .args(args)
        .output()
        .await
        .expect("curl");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let mut headers = BTreeMap::<String, String>::new();
    for line in lines {
        let (name, value) = line.split_once(':').unwrap();
        let value = value.trim().to_owned();
        headers
            .entry(name.to_ascii_lowercase())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    Got {
        status,
        headers,
        body: body.to_owned(),
    }
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

#[tokio::test]
async fn a_browser_preflights_then_gets_a_token_and_calls_the_route_cross_origin() {
    let upstream = Upstream::start().await;
    let sidecar = SidecarBuilder::new(cors_manifests(upstream.port))
        .start()
        .await;
    let token_url = sidecar.url("/event/oauth2/token");
    let route_url = sidecar.url("/event/1");

    // The preflight of a form POST to the token endpoint.
    let got = curl(
        &sidecar,
        &[
            "-X",
            "OPTIONS",
            &token_url,
            "-H",
            "Origin: https://app.example.com",
            "-H",
            "Access-Control-Request-Method: POST",
            "-H",
            "Access-Control-Request-Headers: content-type",
        ],
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(got.body, "");
    assert_eq!(got.header("access-control-allow-origin"), Some(APP));
    assert_eq!(got.header("access-control-allow-methods"), Some("GET,POST"));
    assert_eq!(
        got.header("access-control-allow-headers"),
        Some("content-type")
    );
    assert_eq!(got.header("access-control-max-age"), Some("600"));
    assert_eq!(got.header("vary"), Some("Origin"));

    // The real request, from a partner's subdomain matched by the regex.
    let got = curl(
        &sidecar,
        &[
            &token_url,
            "-H",
            "Origin: https://eu.partner.example",
            "--data",
            "grant_type=password&client_id=clientid&client_secret=clientsecret\
             &provision_key=provisionkey&authenticated_userid=1",
        ],
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(
        got.header("access-control-allow-origin"),
        Some("https://eu.partner.example")
    );
    assert_eq!(
        got.header("access-control-expose-headers"),
        Some("X-Request-Id")
    );
    assert_eq!(got.header("cache-control"), Some("no-store"));
    let token: serde_json::Value = serde_json::from_str(&got.body).unwrap();
    let token = token["access_token"].as_str().unwrap().to_owned();

    // A preflight to the route is answered without the application and without a token...
    let got = curl(
        &sidecar,
        &[
            "-X",
            "OPTIONS",
            &route_url,
            "-H",
            "Origin: https://app.example.com",
            "-H",
            "Access-Control-Request-Method: GET",
            "-H",
            "Access-Control-Request-Headers: authorization",
        ],
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(got.header("access-control-allow-origin"), Some(APP));
    assert_eq!(
        got.header("access-control-allow-headers"),
        Some("authorization")
    );
    assert_eq!(
        upstream.count(),
        0,
        "a preflight never reaches the application"
    );

    // ...and the real request still needs its token.
    let got = curl(
        &sidecar,
        &[&route_url, "-H", "Origin: https://app.example.com"],
    )
    .await;
    assert_eq!(got.status, 401);
    assert_eq!(got.header("access-control-allow-origin"), Some(APP));
    assert_eq!(upstream.count(), 0);

    let bearer = format!("Authorization: Bearer {token}");
    let got = curl(
        &sidecar,
        &[
            &route_url,
            "-H",
            "Origin: https://app.example.com",
            "-H",
            &bearer,
        ],
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(got.header("access-control-allow-origin"), Some(APP));
    assert_eq!(got.header("vary"), Some("Origin"));
    assert_eq!(upstream.count(), 1);
    assert_eq!(upstream.last().header("origin"), Some(APP));

    // An origin not listed: the same answers, none a browser lets its page read.
    let got = curl(
        &sidecar,
        &[
            &route_url,
            "-H",
            "Origin: https://app.example.com.evil.example",
            "-H",
            &bearer,
        ],
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("access-control-allow-origin"), None);
}
