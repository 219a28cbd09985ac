//! The admin API: paging, get, delete, filters, and its errors.

use std::collections::HashSet;

use serde_json::Value;

use crate::harness::{Sidecar, Store, env};

crate::both_stores!(
    listing_pages_through_every_token_once,
    get_by_id_and_unknown_ids,
    delete_twice_is_404_the_second_time,
    listing_filters_by_user_and_client,
    other_namespaces_are_empty,
    an_exported_iam_token_is_imported_and_works,
    imports_are_checked,
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

async fn delete_twice_is_404_the_second_time(store: Store) {
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
        404
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

async fn other_namespaces_are_empty(store: Store) {
    let env = env(store, "").await;
    grant_for(&env.sidecar, "1").await;
    let (status, list) = get_json(&env.sidecar, "/kube-system/oauth2_tokens").await;
    assert_eq!(status, 200);
    assert_eq!(list["data"].as_array().unwrap().len(), 0);
    let (status, _) = get_json(&env.sidecar, "/default/consumers").await;
    assert_eq!(status, 404);
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
