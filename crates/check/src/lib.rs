//! `tollgate check`: whether an install works, as `linkerd check` tells for linkerd. The
//! objects are read once by [`fetch`], with the user's kubeconfig; every verdict is a pure
//! function in [`checks`] (an installed release) or [`pre`] (`--pre`, before installing).
#![forbid(unsafe_code)]

pub mod checks;
pub mod fetch;
pub mod fetched;
pub mod names;
pub mod pre;
pub mod report;
#[cfg(test)]
mod tests;

use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::names::{ChartNames, DEFAULT_NAMESPACE, DEFAULT_RELEASE};
use crate::report::{CheckResult, Group, Report};

/// `tollgate check`'s flags.
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// The release's namespace [default: the kubeconfig context's namespace, else tollgate].
    #[arg(long, short = 'n', value_parser = dns_label)]
    pub namespace: Option<String>,
    /// The Helm release name: the chart names its objects after it.
    #[arg(long, default_value = DEFAULT_RELEASE, value_parser = dns_label)]
    pub release: String,
    /// Check the OAuthServices, Consumers and OAuthApplications of this namespace only
    /// [default: every namespace].
    #[arg(long, value_parser = dns_label)]
    pub resource_namespace: Option<String>,
    /// `text`: one line per check, for a person; `json`: one document, for scripts.
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Check the cluster before an install instead: its version, and the rights to create
    /// what the chart creates.
    #[arg(long)]
    pub pre: bool,
    /// Seconds to wait for each answer of the API server (1 to 300).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub timeout: u64,
    /// A certificate of the controller's that ends within this many days fails (0 to 3650).
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(0..=3650))]
    pub cert_expiry_days: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

/// A namespace or release name as Kubernetes and Helm accept them.
fn dns_label(value: &str) -> Result<String, String> {
    let valid = !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if valid {
        Ok(value.to_owned())
    } else {
        Err("lower-case letters, digits and '-', at most 63, starting and ending with a letter or digit".to_owned())
    }
}

/// Runs the checks `args` ask for against the kubeconfig's cluster.
pub async fn run(args: &CheckArgs) -> Report {
    let timeout = Duration::from_secs(args.timeout);
    let mut api = Group {
        name: "kubernetes-api",
        checks: Vec::new(),
    };
    let (client, url) = match fetch::client(timeout).await {
        Ok(found) => found,
        Err(error) => {
            api.checks.push(CheckResult::failure(
                "can read the kubeconfig",
                vec![error],
                "set KUBECONFIG or ~/.kube/config to the cluster's, as for kubectl",
            ));
            return Report::new(vec![api], false);
        }
    };
    api.checks
        .push(CheckResult::success("can read the kubeconfig"));
    let reach = format!("can reach the API server at {url}");
    if let Err(error) = fetch::version(&client).await {
        api.checks.push(CheckResult::failure(
            reach,
            vec![error],
            "is the cluster up, and the kubeconfig's context the right one? \
             (`kubectl cluster-info` tells the same)",
        ));
        return Report::new(vec![api], false);
    }
    api.checks.push(CheckResult::success(reach));

    let namespace = args
        .namespace
        .clone()
        .or_else(fetch::context_namespace)
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
    let mut groups = vec![api];
    if args.pre {
        groups.extend(pre::pre_groups(
            &fetch::fetch_pre(&client, &namespace).await,
        ));
    } else {
        let names = ChartNames::new(&args.release, &namespace);
        let fetched = fetch::fetch_install(
            &client,
            names,
            args.resource_namespace.as_deref(),
            args.cert_expiry_days,
        )
        .await;
        groups.extend(checks::install_groups(&fetched));
    }
    Report::new(groups, true)
}
