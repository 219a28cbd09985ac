//! The checks of the resources themselves: every OAuthService, Consumer and OAuthApplication
//! Ready, and every injected pod's sidecar holding the current snapshot, read from the
//! conditions the controller writes.

use super::{ACCEPTED, PROGRAMMED, READY, condition_line};
use crate::fetched::{FetchedObjects, ObservedCondition, ObservedResource};
use crate::report::CheckResult;

const RESOURCES_READY: &str = "every OAuthService, Consumer and OAuthApplication is Ready";
const SIDECARS_CURRENT: &str = "every injected pod's sidecar holds the current snapshot";

/// The condition of `type_` in a list.
pub fn condition<'a>(
    conditions: &'a [ObservedCondition],
    type_: &str,
) -> Option<&'a ObservedCondition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Why a resource is not ready, or `None` when it is: its `Ready` condition is True for its
/// current generation.
pub fn not_ready(resource: &ObservedResource) -> Option<String> {
    let status = &resource.status;
    let Some(ready) = condition(&status.conditions, READY) else {
        return Some("no Ready condition yet: is the controller running?".to_owned());
    };
    if ready.status != "True" {
        return Some(condition_line(
            READY,
            &ready.status,
            &ready.reason,
            &ready.message,
        ));
    }
    let observed = ready.observed_generation.or(status.observed_generation);
    match (resource.generation, observed) {
        (Some(generation), Some(observed)) if observed < generation => Some(format!(
            "generation {generation} not yet observed (status is of generation {observed})"
        )),
        _ => None,
    }
}

/// Which pods hold an older snapshot than the resource's, or `None` when all hold it.
pub fn stale_pods(resource: &ObservedResource) -> Option<String> {
    let status = &resource.status;
    if condition(&status.conditions, ACCEPTED).is_some_and(|c| c.status != "True") {
        return None;
    }
    if let Some(programmed) = condition(&status.conditions, PROGRAMMED) {
        return (programmed.status != "True").then(|| {
            condition_line(
                PROGRAMMED,
                &programmed.status,
                &programmed.reason,
                &programmed.message,
            )
        });
    }
    match (status.selected_pods, status.up_to_date_pods) {
        (Some(selected), Some(current)) if current < selected => Some(format!(
            "{} of {selected} selected pods hold an older snapshot",
            selected - current
        )),
        _ => None,
    }
}

pub fn resources_ready(f: &FetchedObjects) -> CheckResult {
    per_resource(f, RESOURCES_READY, not_ready, |f| {
        format!(
            "`kubectl describe` the resource: its Ready condition says what to fix; the \
             controller logs each problem (kubectl -n {} logs deployment/{})",
            f.names.namespace,
            f.names.controller()
        )
    })
}

pub fn sidecars_current(f: &FetchedObjects) -> CheckResult {
    per_resource(f, SIDECARS_CURRENT, stale_pods, |_| {
        "a stale sidecar lost its stream to the controller: read its logs \
         (kubectl logs POD -c tollgate-sidecar); the NetworkPolicy must let it reach the \
         controller's Service on 8090"
            .to_owned()
    })
}

/// A check failing with one line per resource `problem` finds fault with.
fn per_resource(
    f: &FetchedObjects,
    description: &str,
    problem: fn(&ObservedResource) -> Option<String>,
    hint: fn(&FetchedObjects) -> String,
) -> CheckResult {
    let resources = match &f.resources {
        Err(error) => {
            return CheckResult::failure(
                description,
                vec![format!("cannot list them: {error}")],
                "listing them needs `list` on the three kinds in every namespace",
            );
        }
        Ok(resources) => resources,
    };
    let details: Vec<String> = resources
        .iter()
        .filter_map(|r| {
            problem(r).map(|why| format!("{}/{} {}: {why}", r.namespace, r.kind, r.name))
        })
        .collect();
    if details.is_empty() {
        return CheckResult::success(description)
            .with_detail(format!("{} resources", resources.len()));
    }
    CheckResult::failure(description, details, hint(f))
}
