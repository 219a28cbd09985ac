//! `tollgate`: one binary, one image. Parses and validates all configuration before binding
//! any port; a bad flag, file or manifest is reported with its name and exit code 64.
//!
//! Built without the default `control-plane` feature it is the sidecar alone, the binary
//! injected pods run (`tollgate-sidecar` in the image, `make build-sidecar`): `controller`,
//! `inject` and `crdgen` then stop with a hint saying which build has them, and exit code 64.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};
#[cfg(feature = "control-plane")]
use tollgate_controller::ControllerArgs;
#[cfg(feature = "control-plane")]
use tollgate_inject::cli::InjectCommand;
use tollgate_sidecar::{Config, SidecarArgs};

/// sysexits.h EX_USAGE: the command was used incorrectly (bad flag, file or manifest).
const EX_USAGE: u8 = 64;

/// OAuth 2.0 for InterSystems IRIS web services in Kubernetes, compatible with IAM (Kong).
#[derive(Parser)]
#[command(name = "tollgate", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the proxy, the OAuth endpoints and the admin API for one pod.
    Sidecar(Box<SidecarArgs>),
    /// Watch the resources, stream each pod's snapshot to its sidecar, write status, and serve
    /// the admin API.
    #[cfg(feature = "control-plane")]
    Controller(Box<ControllerArgs>),
    /// Print the CustomResourceDefinitions as multi-document YAML (the files under crds/).
    #[cfg(feature = "control-plane")]
    Crdgen,
    /// Print a manifest with the sidecar injected into its pods and pod templates.
    #[cfg(feature = "control-plane")]
    Inject(Box<InjectCommand>),
}

/// The subcommands only the full build (`control-plane`) has.
#[cfg(any(test, not(feature = "control-plane")))]
const CONTROL_PLANE_SUBCOMMANDS: &[&str] = &["controller", "inject", "crdgen"];

/// For the sidecar-only build: when the first word after the options is a control-plane
/// subcommand, what to build instead of clap's bare "unrecognized subcommand".
#[cfg(any(test, not(feature = "control-plane")))]
fn missing_subcommand_hint(args: &[String]) -> Option<String> {
    let subcommand = args.iter().skip(1).find(|a| !a.starts_with('-'))?;
    CONTROL_PLANE_SUBCOMMANDS
        .contains(&subcommand.as_str())
        .then(|| {
            format!(
                "error: `{subcommand}` is not in this build: it is the sidecar-only binary \
             (built with --no-default-features, `make build-sidecar`, installed as \
             target/release/tollgate-sidecar). Build the full binary with `make build` \
             (cargo build --release --locked --bin tollgate) and run \
             target/release/tollgate {subcommand}"
            )
        })
}

fn main() -> ExitCode {
    #[cfg(not(feature = "control-plane"))]
    if let Some(hint) = missing_subcommand_hint(&std::env::args().collect::<Vec<_>>()) {
        eprintln!("{hint}");
        return ExitCode::from(EX_USAGE);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) if error.use_stderr() => {
            let _ = error.print();
            return ExitCode::from(EX_USAGE);
        }
        Err(help_or_version) => {
            let _ = help_or_version.print();
            return ExitCode::SUCCESS;
        }
    };
    match cli.command {
        Command::Sidecar(args) => sidecar(&args),
        #[cfg(feature = "control-plane")]
        Command::Crdgen => {
            print!("{}", tollgate_api::resources::crds_yaml());
            ExitCode::SUCCESS
        }
        #[cfg(feature = "control-plane")]
        Command::Inject(args) => inject(&args),
        #[cfg(feature = "control-plane")]
        Command::Controller(args) => controller(&args),
    }
}

fn sidecar(args: &SidecarArgs) -> ExitCode {
    init_tracing();
    match Config::load(args) {
        Ok(config) => run(
            "sidecar",
            args.worker_threads,
            tollgate_sidecar::run(config),
        ),
        Err(errors) => usage("sidecar", &errors.0),
    }
}

#[cfg(feature = "control-plane")]
fn controller(args: &ControllerArgs) -> ExitCode {
    init_tracing();
    match tollgate_controller::Config::load(args) {
        Ok(config) => run(
            "controller",
            args.worker_threads,
            tollgate_controller::run(config),
        ),
        Err(errors) => usage("controller", &errors.0),
    }
}

/// One line per configuration problem, then EX_USAGE.
fn usage(role: &str, errors: &[String]) -> ExitCode {
    for error in errors {
        eprintln!("tollgate {role}: {error}");
    }
    ExitCode::from(EX_USAGE)
}

/// Runs `serve` to completion on a runtime of `worker_threads` threads. One thread gets
/// tokio's current-thread scheduler: a sidecar's default, with no cross-thread wake-ups.
fn run(
    role: &str,
    worker_threads: usize,
    serve: impl Future<Output = anyhow::Result<()>>,
) -> ExitCode {
    let runtime = if worker_threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(worker_threads)
            .enable_all()
            .build()
    };
    let result = match runtime {
        Ok(runtime) => runtime.block_on(serve),
        Err(error) => Err(anyhow::Error::new(error).context("cannot start the async runtime")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("tollgate {role}: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The injected manifest on stdout, notes (pods left alone, warnings) on stderr.
#[cfg(feature = "control-plane")]
fn inject(args: &InjectCommand) -> ExitCode {
    use std::io::Write;
    match tollgate_inject::cli::run(args) {
        Ok(injected) => {
            for note in &injected.notes {
                eprintln!("tollgate inject: {note}");
            }
            match std::io::stdout().write_all(injected.yaml.as_bytes()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::FAILURE,
            }
        }
        Err(errors) => {
            for error in &errors {
                eprintln!("tollgate inject: {error}");
            }
            ExitCode::from(EX_USAGE)
        }
    }
}

/// Logs go to stderr; `TOLLGATE_LOG` (or `RUST_LOG`) sets the filter, `TOLLGATE_LOG_FORMAT=json`
/// switches to one JSON object per line for log collectors.
fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("TOLLGATE_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".to_owned());
    // Colours only for a person at a terminal: log collectors get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(filter))
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if std::env::var("TOLLGATE_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| (*w).to_owned()).collect()
    }

    #[test]
    fn a_control_plane_subcommand_gets_a_hint_naming_the_full_build() {
        for subcommand in CONTROL_PLANE_SUBCOMMANDS {
            let hint =
                missing_subcommand_hint(&args(&["tollgate", subcommand, "--namespace", "x"]))
                    .unwrap_or_else(|| panic!("{subcommand}"));
            assert!(
                hint.contains(&format!("`{subcommand}` is not in this build")),
                "{hint}"
            );
            assert!(hint.contains("make build"), "{hint}");
            assert!(
                hint.contains(&format!("target/release/tollgate {subcommand}")),
                "{hint}"
            );
        }
    }

    #[test]
    fn other_words_get_no_hint() {
        for words in [
            &["tollgate", "sidecar", "--manifests", "controller"][..],
            &["tollgate", "--help"],
            &["tollgate"],
            &["tollgate", "sidecr"],
        ] {
            assert_eq!(missing_subcommand_hint(&args(words)), None, "{words:?}");
        }
    }
}
