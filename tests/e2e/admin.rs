//! The admin API: paging, get, delete, filters, and its errors; and what a standalone
//! sidecar's admin API keeps out of reach: other namespaces' tokens, and everything without
//! the --admin-token-file token.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::harness::{
    RedisServer, Sidecar, SidecarBuilder, Store, Upstream, article_manifests, env, tollgate,
};

crate::both_stores!(
    listing_pages_through_every_token_once,
    get_by_id_and_unknown_ids,
    delete_twice_is_204_both_times,
    listing_filters_by_user_and_client,
    other_namespaces_are_not_served,
    an_exported_iam_token_is_imported_and_works,
    imports_are_checked,
    the_admin_token_file_guards_every_request,
);

async fn get_json(sidecar: &Sidecar, path: &str) -> (u16, Value) {
    let response = sidecar
        .client
        .get(sidecar.admin_url(path))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn grant_for(sidecar: &Sidecar, userid: &str) -> Value {
    let response = sidecar
        .client
        .post(sidecar.url("/event/oauth2/token"))
        .json(&serde_json::json!({
            "client_id": "clientid", "client_secret": "clientsecret", "grant_type": "password",
            "provision_key": "provisionkey", "authenticated_userid": userid
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn listing_pages_through_every_token_once(store: Store) {
    let env = env(store, "").await;
    for i in 0..5 {
        grant_for(&env.sidecar, &i.to_string()).await;
    }
    let mut ids = HashSet::new();
    let mut path = "/default/oauth2_tokens?size=2".to_owned();
    let mut pages = 0;
    loop {
        let (status, page) = get_json(&env.sidecar, &path).await;
        assert_eq!(status, 200, "{page}");
        pages += 1;
        for entry in page["data"].as_array().unwrap() {
            assert!(
                ids.insert(entry["id"].as_str().unwrap().to_owned()),
                "repeated {entry}"
            );
        }
        match page["next"].as_str() {
            Some(next) => {
                assert!(page["offset"].is_string());
                path = next.to_owned();
            }
            None => break,
        }
    }
    assert_eq!(ids.len(), 5);
    assert_eq!(pages, 3);

    let (status, body) = get_json(&env.sidecar, "/default/oauth2_tokens?size=0").await;
    assert_eq!(status, 400);
    assert!(body["message"].as_str().unwrap().contains("size"));
    let (status, _) = get_json(&env.sidecar, "/default/oauth2_tokens?offset=garbage").await;
    assert_eq!(status, 400);
}

async fn get_by_id_and_unknown_ids(store: Store) {
    let env = env(store, "").await;
    grant_for(&env.sidecar, "42").await;
    let (_, list) = get_json(&env.sidecar, "/default/oauth2_tokens").await;
    let entry = &list["data"][0];
    let id = entry["id"].as_str().unwrap();
    let (status, one) = get_json(&env.sidecar, &format!("/default/oauth2_tokens/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(&one, entry);
    let (status, body) = get_json(
        &env.sidecar,
        "/default/oauth2_tokens/41156679-33b8-43b5-a4a2-f0c9a5f45b7e",
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(body["message"], "Not found");
    let (status, _) = get_json(&env.sidecar, "/default/oauth2_tokens/not-a-uuid").await;
    assert_eq!(status, 400);
    // Kong's workspace-less path is the default namespace.
    let (status, list) = get_json(&env.sidecar, "/oauth2_tokens").await;
    assert_eq!(status, 200);
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
}

/// Kong answers 204 to the second DELETE too (02-api_spec.lua:958): whether a token existed
/// is not told.
async fn delete_twice_is_204_both_times(store: Store) {
    let env = env(store, "").await;
    let token = grant_for(&env.sidecar, "1").await;
    let (_, list) = get_json(&env.sidecar, "/default/oauth2_tokens").await;
    let id = list["data"][0]["id"].as_str().unwrap().to_owned();
    let url = env
        .sidecar
        .admin_url(&format!("/default/oauth2_tokens/{id}"));
    assert_eq!(
        env.sidecar
            .client
            .delete(&url)
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        env.sidecar
            .client
            .delete(&url)
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    // The refresh token went with the record.
    let response = env
        .sidecar
        .client
        .post(env.sidecar.url("/event/oauth2/token"))
        .json(
            &serde_json::json!({"client_id": "clientid", "client_secret": "clientsecret",
            "grant_type": "refresh_token", "refresh_token": token["refresh_token"]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

async fn listing_filters_by_user_and_client(store: Store) {
    let env = env(store, "").await;
    grant_for(&env.sidecar, "alice").await;
    grant_for(&env.sidecar, "bob").await;
    grant_for(&env.sidecar, "alice").await;
    let (_, list) = get_json(
        &env.sidecar,
        "/default/oauth2_tokens?authenticated_userid=alice",
    )
    .await;
    let data = list["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert!(data.iter().all(|e| e["authenticated_userid"] == "alice"));
    let (_, list) = get_json(&env.sidecar, "/default/oauth2_tokens?client_id=clientid").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 3);
    let (_, list) = get_json(&env.sidecar, "/default/oauth2_tokens?client_id=other").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 0);
}

async fn other_namespaces_are_not_served(store: Store) {
    let env = env(store, "").await;
    grant_for(&env.sidecar, "1").await;
    let (status, list) = get_json(&env.sidecar, "/kube-system/oauth2_tokens").await;
    assert_eq!(status, 404, "{list}");
    assert!(
        list["message"].as_str().unwrap().contains("kube-system"),
        "{list}"
    );
    let (status, _) = get_json(&env.sidecar, "/default/consumers").await;
    assert_eq!(status, 404);
}

/// The article's manifests, every object in `namespace`.
fn manifests_in(namespace: &str, upstream_port: u16) -> String {
    article_manifests(upstream_port, "").replace(
        "metadata:\n  name:",
        &format!("metadata:\n  namespace: {namespace}\n  name:"),
    )
}

/// Two standalone sidecars share one Redis, one configured for `default`, the other for
/// `team-b`. Whatever reaches the first one's admin API (IRIS, or an SSRF in it) can neither
/// read, revoke nor mint `team-b`'s tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_namespaces_tokens_are_out_of_reach() {
    let redis = RedisServer::start();
    let upstream = Upstream::start().await;
    let team_b = manifests_in("team-b", upstream.port);
    assert!(team_b.contains("namespace: team-b"), "{team_b}");
    let a = SidecarBuilder::new(article_manifests(upstream.port, ""))
        .redis(&redis.url())
        .start()
        .await;
    let b = SidecarBuilder::new(team_b)
        .redis(&redis.url())
        .start()
        .await;
    let victim = grant_for(&b, "victim").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, listed) = get_json(&b, "/team-b/oauth2_tokens").await;
    assert_eq!(status, 200, "{listed}");
    let id = listed["data"][0]["id"].as_str().unwrap().to_owned();

    let (status, body) = get_json(&a, "/team-b/oauth2_tokens").await;
    assert_eq!(status, 404, "listing another namespace: {body}");
    let (status, body) = get_json(&a, &format!("/team-b/oauth2_tokens/{id}")).await;
    assert_eq!(status, 404, "getting another namespace's token: {body}");
    for path in [
        format!("/team-b/oauth2_tokens/{id}"),
        "/team-b/oauth2_tokens?authenticated_userid=victim".to_owned(),
    ] {
        let response = a.client.delete(a.admin_url(&path)).send().await.unwrap();
        assert_eq!(response.status(), 404, "DELETE {path}");
    }
    // The forged import: any user, any scope, never expiring.
    let forged = "forged-token-of-my-own-choosing";
    let response = a
        .client
        .post(a.admin_url("/team-b/oauth2_tokens"))
        .json(&json!({"access_token": forged, "client_id": "clientid",
                      "authenticated_userid": "admin", "scope": "all", "expires_in": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);

    assert_eq!(b.get_with_token("/event/1", forged).await.status(), 401);
    assert_eq!(b.get_with_token("/event/1", &victim).await.status(), 200);
    assert_eq!(
        upstream.last().header("x-authenticated-userid"),
        Some("victim")
    );
    let (_, listed) = get_json(&b, "/team-b/oauth2_tokens").await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1, "{listed}");
}

/// With --admin-token-file, nothing passes without `Authorization: Bearer <token>`: not a
/// listing, not the forged import.
async fn the_admin_token_file_guards_every_request(store: Store) {
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, "s3cret-admin-token-0123456789\n").unwrap();
    let mut builder = SidecarBuilder::new(article_manifests(upstream.port, ""))
        .arg("--admin-token-file")
        .arg(token_file.to_str().unwrap());
    let redis = matches!(store, Store::Redis).then(RedisServer::start);
    if let Some(redis) = &redis {
        builder = builder.redis(&redis.url());
    }
    let sidecar = builder.start().await;
    grant_for(&sidecar, "1").await;
    let list = sidecar.admin_url("/default/oauth2_tokens");
    let forged = "forged-token-of-my-own-choosing";
    let import = json!({"access_token": forged, "client_id": "clientid",
                        "authenticated_userid": "admin", "expires_in": 0});
    for authorization in [
        None,
        Some("Bearer wrong-token-0123456789abcdef"),
        Some("Bearer s3cret-admin-token-012345678"),
        Some("Basic s3cret-admin-token-0123456789"),
    ] {
        let with = |request: reqwest::RequestBuilder| match authorization {
            Some(value) => request.header("authorization", value),
            None => request,
        };
        let response = with(sidecar.client.get(&list)).send().await.unwrap();
        assert_eq!(response.status(), 401, "{authorization:?}");
        assert_eq!(
            response.headers()["www-authenticate"],
            "Bearer",
            "{authorization:?}"
        );
        let response = with(sidecar.client.post(&list).json(&import))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{authorization:?}");
    }
    assert_eq!(
        sidecar.get_with_token("/event/1", forged).await.status(),
        401
    );
    let response = sidecar
        .client
        .get(&list)
        .bearer_auth("s3cret-admin-token-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"].as_array().unwrap().len(), 1, "{body}");
    assert!(!sidecar.logs().contains("s3cret-admin-token"));
}

#[test]
fn a_bad_admin_token_file_is_one_message_and_exit_64() {
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("article.yaml");
    std::fs::write(&manifests, article_manifests(1, "")).unwrap();
    let short = dir.path().join("short-token");
    std::fs::write(&short, "tiny-secret\n").unwrap();
    let missing = dir.path().join("missing-token");
    for (file, expected) in [(&short, "at least 16 bytes"), (&missing, "No such file")] {
        let output = tollgate()
            .arg("sidecar")
            .arg("--manifests")
            .arg(&manifests)
            .arg("--admin-token-file")
            .arg(file)
            .env_remove("TOLLGATE_REDIS_URL")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(64), "{stderr}");
        assert!(stderr.contains("--admin-token-file"), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
        assert!(!stderr.contains("tiny-secret"), "{stderr}");
    }
}

async fn an_exported_iam_token_is_imported_and_works(store: Store) {
    let env = env(store, "").await;
    // A token as Kong's admin API exports it: seconds, foreign keys as objects, its values.
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 60;
    let response = env
        .sidecar
        .client
        .post(env.sidecar.admin_url("/default/oauth2_tokens"))
        .json(&serde_json::json!({
            "id": "41156679-33b8-43b5-a4a2-f0c9a5f45b7e",
            "access_token": "15dKBDdqNH3RCoSNOQvZGAM6JKUundXy",
            "refresh_token": "MpnwawpGLx8B8z4cFvTctNqTYj8hCD",
            "client_id": "clientid",
            "service_name": "sampleirisservice",
            "authenticated_userid": "1",
            "scope": "",
            "token_type": "bearer",
            "expires_in": 7200,
            "created_at": created,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let text = response.text().await.unwrap();
    assert!(
        !text.contains("15dKBDdqNH3RCoSNOQvZGAM6JKUundXy"),
        "values are never shown"
    );
    let entry: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(entry["id"], "41156679-33b8-43b5-a4a2-f0c9a5f45b7e");
    assert_eq!(entry["created_at"].as_u64(), Some(created * 1000));

    let response = env
        .sidecar
        .get_with_token("/event/1", "15dKBDdqNH3RCoSNOQvZGAM6JKUundXy")
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        env.upstream.last().header("x-authenticated-userid"),
        Some("1")
    );
    // Its refresh token works too, and replaces it.
    let response = env
        .sidecar
        .client
        .post(env.sidecar.url("/event/oauth2/token"))
        .json(
            &serde_json::json!({"client_id": "clientid", "client_secret": "clientsecret",
            "grant_type": "refresh_token", "refresh_token": "MpnwawpGLx8B8z4cFvTctNqTYj8hCD"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    if let Some(redis) = &env.redis {
        for key in redis.keys() {
            assert!(
                !key.contains("15dKBDdqNH3RCoSNOQvZGAM6JKUundXy"),
                "stored hashed"
            );
            let value = format!("{:?}", redis.command(&["GET", &key]));
            assert!(
                !value.contains("15dKBDdqNH3RCoSNOQvZGAM6JKUundXy"),
                "stored hashed"
            );
        }
    }
}

async fn imports_are_checked(store: Store) {
    let env = env(store, "").await;
    let import = |body: Value| {
        env.sidecar
            .client
            .post(env.sidecar.admin_url("/default/oauth2_tokens"))
            .json(&body)
            .send()
    };
    for (body, needle) in [
        (
            serde_json::json!({"access_token": "x", "client_id": "nobody"}),
            "no OAuthApplication",
        ),
        (serde_json::json!({"access_token": "x"}), "client_id"),
        (
            serde_json::json!({"access_token": "x", "client_id": "clientid", "service_name": "nope"}),
            "no OAuthService nope",
        ),
        (serde_json::json!({"client_id": "clientid"}), "access_token"),
        (
            serde_json::json!({"access_token": "x", "client_id": "clientid", "colour": 1}),
            "colour",
        ),
    ] {
        let response = import(body).await.unwrap();
        assert_eq!(response.status(), 400);
        let body: Value = response.json().await.unwrap();
        assert!(body["message"].as_str().unwrap().contains(needle), "{body}");
    }
}
