//! The Lease that elects the one replica writing status, as client-go's leader election: the
//! decision is a pure function of the Lease and the clock, and the write a compare-and-swap.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tokio::sync::watch;

use crate::metrics::Metrics;

/// How long a Lease holder keeps it without renewing, as client-go's leader election.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the holder renews, and others try to take it.
pub const LEASE_RETRY: Duration = Duration::from_secs(5);

/// What a replica does with the Lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseDecision {
    /// Ours: renew it.
    Renew,
    /// Free or expired: take it.
    Take,
    /// Someone else holds it.
    Wait,
}

/// What to do with the Lease `spec` at `now`, for the replica `identity`.
pub fn lease_decision(spec: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> LeaseDecision {
    let Some(spec) = spec else {
        return LeaseDecision::Take;
    };
    match spec.holder_identity.as_deref() {
        None | Some("") => return LeaseDecision::Take,
        Some(holder) if holder == identity => return LeaseDecision::Renew,
        Some(_) => {}
    }
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(0).max(1));
    let renewed = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0.as_second());
    match renewed {
        Some(renewed) if renewed + duration > now.as_second() => LeaseDecision::Wait,
        _ => LeaseDecision::Take,
    }
}

/// The Lease spec after `identity` renews or takes it.
pub fn lease_spec(current: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> LeaseSpec {
    let ours = current.and_then(|s| s.holder_identity.as_deref()) == Some(identity);
    let transitions = current.and_then(|s| s.lease_transitions).unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(identity.to_owned()),
        lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
        acquire_time: if ours {
            current.and_then(|s| s.acquire_time.clone())
        } else {
            Some(MicroTime(now))
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(if ours || current.is_none() {
            transitions
        } else {
            transitions + 1
        }),
        ..Default::default()
    }
}

/// One round: renews or takes the Lease when it may. `Ok(true)` while this replica holds it.
pub async fn try_lease(api: &Api<Lease>, name: &str, identity: &str) -> kube::Result<bool> {
    let now = Timestamp::now();
    let Some(mut lease) = api.get_opt(name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..Default::default()
            },
            spec: Some(lease_spec(None, identity, now)),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error),
        };
    };
    if lease_decision(lease.spec.as_ref(), identity, now) == LeaseDecision::Wait {
        return Ok(false);
    }
    lease.spec = Some(lease_spec(lease.spec.as_ref(), identity, now));
    lease.metadata.managed_fields = None;
    // The resourceVersion read above makes this a compare-and-swap: of two replicas taking
    // an expired Lease at once, one gets 409.
    match api.replace(name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(error) => Err(error),
    }
}

/// Holds the Lease `name` as `identity` until `shutdown`, saying on `leader` whether this
/// replica holds it.
pub(super) async fn hold_lease(
    api: Api<Lease>,
    name: String,
    identity: String,
    leader: watch::Sender<bool>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last_renewed: Option<Instant> = None;
    loop {
        match try_lease(&api, &name, &identity).await {
            Ok(held) => {
                last_renewed = held.then(Instant::now);
                set_leader(&leader, &metrics, held, &identity);
            }
            Err(error) => {
                metrics.reconcile_error("Lease");
                tracing::warn!(%error, lease = %name, "cannot read or renew the Lease");
                // Another replica may take an expired Lease: stop writing before it can.
                if last_renewed.is_none_or(|at| at.elapsed() >= LEASE_DURATION - LEASE_RETRY) {
                    set_leader(&leader, &metrics, false, &identity);
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(LEASE_RETRY) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

fn set_leader(leader: &watch::Sender<bool>, metrics: &Metrics, held: bool, identity: &str) {
    let changed = leader.send_if_modified(|now| std::mem::replace(now, held) != held);
    if changed {
        metrics.leader.set(i64::from(held));
        if held {
            tracing::info!(identity, "holding the Lease: writing status");
        } else {
            tracing::info!(
                identity,
                "not holding the Lease: status is written by another replica"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    #[test]
    fn the_lease_is_taken_when_free_or_expired_and_renewed_by_its_holder() {
        assert_eq!(lease_decision(None, "a", at(100)), LeaseDecision::Take);
        let held = lease_spec(None, "a", at(100));
        assert_eq!(held.lease_transitions, Some(0));
        assert_eq!(
            lease_decision(Some(&held), "a", at(101)),
            LeaseDecision::Renew
        );
        assert_eq!(
            lease_decision(Some(&held), "b", at(101)),
            LeaseDecision::Wait
        );
        assert_eq!(
            lease_decision(Some(&held), "b", at(115)),
            LeaseDecision::Take
        );

        let renewed = lease_spec(Some(&held), "a", at(110));
        assert_eq!(renewed.acquire_time, held.acquire_time);
        assert_eq!(renewed.lease_transitions, Some(0));
        let taken = lease_spec(Some(&renewed), "b", at(130));
        assert_eq!(taken.holder_identity.as_deref(), Some("b"));
        assert_eq!(taken.acquire_time, Some(MicroTime(at(130))));
        assert_eq!(taken.lease_transitions, Some(1));

        let released = LeaseSpec {
            holder_identity: None,
            ..held
        };
        assert_eq!(
            lease_decision(Some(&released), "b", at(101)),
            LeaseDecision::Take
        );
    }
}
