//! What stands between any pod and the API server: every request to the controller's
//! listeners carries a bearer token to review, and anyone can send one. TokenReview answers
//! are remembered for a short while under a digest of the token (never the token), and at
//! most a fixed number of reviews (TokenReview or SubjectAccessReview) are in flight at once,
//! so no caller can make the controller call the API server once per request without bound.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use moka::sync::Cache;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::auth::{Access, AccessReviewer, AuthError, Identity, TokenReviewer};

/// How long a TokenReview's answer is trusted. Short: a deleted ServiceAccount's token is
/// refused again within this long.
pub const DEFAULT_TOKEN_REVIEW_CACHE_SECONDS: u64 = 10;
/// Reviews in flight to the API server at once, across all listeners.
pub const DEFAULT_REVIEW_CONCURRENCY: usize = 16;
/// Answers remembered at most: bounded memory whatever tokens are sent.
const MAX_CACHED_REVIEWS: u64 = 10_000;

/// A reviewer with a cache of token reviews and a bound on concurrent reviews.
pub struct GuardedReviewer<R> {
    inner: Arc<R>,
    /// By SHA-256 of (audience, token): the answer, valid or not.
    tokens: Cache<[u8; 32], Option<Identity>>,
    permits: Semaphore,
}

impl<R> GuardedReviewer<R> {
    pub fn new(inner: Arc<R>, cache_for: Duration, concurrency: usize) -> Self {
        Self {
            inner,
            tokens: Cache::builder()
                .max_capacity(MAX_CACHED_REVIEWS)
                .time_to_live(cache_for)
                .build(),
            permits: Semaphore::new(concurrency.max(1)),
        }
    }
}

/// The cache key of `token` for `audience`: a digest, so the cache holds no credential.
fn cache_key(token: &str, audience: Option<&str>) -> [u8; 32] {
    let mut hash = Sha256::new();
    // The audience's length first, so ("ab", "c") and ("a", "bc") differ.
    let audience = audience.unwrap_or("");
    hash.update((audience.len() as u64).to_be_bytes());
    hash.update(audience.as_bytes());
    hash.update(token.as_bytes());
    hash.finalize().into()
}

impl<R: TokenReviewer> TokenReviewer for GuardedReviewer<R> {
    fn review<'a>(
        &'a self,
        token: &'a str,
        audience: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<Identity>, AuthError>> {
        Box::pin(async move {
            let key = cache_key(token, audience);
            if let Some(answer) = self.tokens.get(&key) {
                return Ok(answer);
            }
            let answer = {
                let _permit = self
                    .permits
                    .acquire()
                    .await
                    .map_err(|_| AuthError::Unavailable("shutting down".into()))?;
                self.inner.review(token, audience).await?
            };
            // Errors are not remembered: the next request asks again.
            self.tokens.insert(key, answer.clone());
            Ok(answer)
        })
    }
}

impl<R: AccessReviewer> AccessReviewer for GuardedReviewer<R> {
    fn allowed<'a>(
        &'a self,
        who: &'a Identity,
        access: &'a Access,
    ) -> BoxFuture<'a, Result<bool, AuthError>> {
        Box::pin(async move {
            let _permit = self
                .permits
                .acquire()
                .await
                .map_err(|_| AuthError::Unavailable("shutting down".into()))?;
            self.inner.allowed(who, access).await
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Counts reviews, and how many run at once; "good" is the one valid token.
    #[derive(Default)]
    struct Counting {
        calls: AtomicUsize,
        running: AtomicUsize,
        most_at_once: AtomicUsize,
    }

    impl Counting {
        async fn visit(&self) {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_at_once.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            self.running.fetch_sub(1, Ordering::SeqCst);
        }
    }

    impl TokenReviewer for Counting {
        fn review<'a>(
            &'a self,
            token: &'a str,
            _audience: Option<&'a str>,
        ) -> BoxFuture<'a, Result<Option<Identity>, AuthError>> {
            Box::pin(async move {
                self.visit().await;
                Ok((token == "good").then(|| Identity {
                    username: "alice".into(),
                    ..Default::default()
                }))
            })
        }
    }

    impl AccessReviewer for Counting {
        fn allowed<'a>(
            &'a self,
            _who: &'a Identity,
            _access: &'a Access,
        ) -> BoxFuture<'a, Result<bool, AuthError>> {
            Box::pin(async move {
                self.visit().await;
                Ok(true)
            })
        }
    }

    #[tokio::test]
    async fn a_token_is_reviewed_once_within_the_cache_time_per_audience() {
        let inner = Arc::new(Counting::default());
        let guard = GuardedReviewer::new(inner.clone(), Duration::from_secs(10), 4);
        for _ in 0..5 {
            let who = guard.review("good", Some("tollgate")).await.unwrap();
            assert_eq!(who.unwrap().username, "alice");
            assert!(
                guard
                    .review("bad", Some("tollgate"))
                    .await
                    .unwrap()
                    .is_none()
            );
        }
        assert_eq!(inner.calls.load(Ordering::SeqCst), 2);
        // Another audience is another question.
        guard.review("good", None).await.unwrap();
        assert_eq!(inner.calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn answers_expire() {
        let inner = Arc::new(Counting::default());
        let guard = GuardedReviewer::new(inner.clone(), Duration::from_millis(50), 4);
        guard.review("good", None).await.unwrap();
        tokio::time::sleep(Duration::from_millis(120)).await;
        guard.review("good", None).await.unwrap();
        assert_eq!(inner.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reviews_in_flight_are_bounded() {
        let inner = Arc::new(Counting::default());
        let guard = Arc::new(GuardedReviewer::new(
            inner.clone(),
            Duration::from_secs(10),
            3,
        ));
        let who = Identity::default();
        let access = Access {
            verb: "list",
            namespace: "default".into(),
            name: None,
        };
        let mut tasks = Vec::new();
        for i in 0..12 {
            let guard = guard.clone();
            let (who, access) = (who.clone(), access.clone());
            tasks.push(tokio::spawn(async move {
                // Distinct tokens, so the cache does not help.
                guard.review(&format!("token-{i}"), None).await.unwrap();
                guard.allowed(&who, &access).await.unwrap();
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(inner.calls.load(Ordering::SeqCst), 24);
        assert!(inner.most_at_once.load(Ordering::SeqCst) <= 3);
    }

    #[test]
    fn the_cache_key_is_a_digest_bound_to_the_audience() {
        assert_ne!(cache_key("ab", Some("c")), cache_key("b", Some("ca")));
        assert_ne!(cache_key("t", None), cache_key("t", Some("tollgate")));
        let key = cache_key("my-secret-token", None);
        assert!(!hex_contains(&key, b"my-secret-token"));
    }

    fn hex_contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }
}
