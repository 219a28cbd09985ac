//! `tollgate`: one binary, one image. Parses and validates all configuration before binding
//! any port; a bad flag, file or manifest is reported with its name and exit code 64.
//!
//! Built without the default `control-plane` feature it is the sidecar alone, the binary
//! injected pods run (`tollgate-sidecar` in the image, `make build-sidecar`): `controller`,
//! `inject`, `crdgen`, `check` and `migrate` then stop with a hint saying which build has
//! them, and exit code 64.
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
    /// Check an install with the kubeconfig, one line per check (exit 1 when one fails, 2
    /// when the API server cannot be reached).
    #[cfg(feature = "control-plane")]
    Check(Box<tollgate_check::CheckArgs>),
    /// Print tollgate's manifests for another gateway's configuration.
    #[cfg(feature = "control-plane")]
    #[command(subcommand)]
    Migrate(MigrateCommand),
}

#[cfg(feature = "control-plane")]
#[derive(Subcommand)]
enum MigrateCommand {
    /// Kong's declarative configuration (`deck dump`, `kong config db_export`) as
    /// OAuthService, Consumer, OAuthApplication and Secret manifests on stdout; what cannot be
    /// carried over, one line each on stderr.
    Kong(MigrateKongArgs),
}

#[cfg(feature = "control-plane")]
#[derive(clap::Args)]
struct MigrateKongArgs {
    /// Kong's declarative configuration, YAML or JSON.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: std::path::PathBuf,
    /// The namespace of every manifest.
    #[arg(short = 'n', long, default_value = tollgate_migrate::DEFAULT_NAMESPACE)]
    namespace: String,
    /// Output format: multi-document YAML, or one JSON List.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Yaml)]
    output: OutputFormat,
    /// Write the exported `oauth2_tokens` here, one admin API import body per line (mode
    /// 0600: they are live tokens). Without it, they are counted on stderr only.
    #[arg(long, value_name = "FILE")]
    tokens_out: Option<std::path::PathBuf>,
}

#[cfg(feature = "control-plane")]
#[derive(Clone, Copy, clap::ValueEnum)]
enum OutputFormat {
    Yaml,
    Json,
}

/// The subcommands only the full build (`control-plane`) has.
#[cfg(any(test, not(feature = "control-plane")))]
const CONTROL_PLANE_SUBCOMMANDS: &[&str] = &["controller", "inject", "crdgen", "check", "migrate"];

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
        #[cfg(feature = "control-plane")]
        Command::Check(args) => check(&args),
        #[cfg(feature = "control-plane")]
        Command::Migrate(MigrateCommand::Kong(args)) => migrate_kong(&args),
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

/// The report on stdout, as text or JSON; the exit code says whether every check passed.
#[cfg(feature = "control-plane")]
fn check(args: &tollgate_check::CheckArgs) -> ExitCode {
    use std::io::Write;
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("tollgate check: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let report = runtime.block_on(tollgate_check::run(args));
    let rendered = match args.output {
        tollgate_check::OutputFormat::Text => report.text(),
        tollgate_check::OutputFormat::Json => report.json(),
    };
    match std::io::stdout().write_all(rendered.as_bytes()) {
        Ok(()) => ExitCode::from(report.exit_code),
        Err(_) => ExitCode::FAILURE,
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

/// The manifests on stdout; what was not carried over on stderr, one line each, exit 0. A
/// file that cannot be read as Kong's: one line naming it and where, exit 64.
#[cfg(feature = "control-plane")]
fn migrate_kong(args: &MigrateKongArgs) -> ExitCode {
    use std::io::Write;
    let migration = match tollgate_migrate::kong_file(&args.file, &args.namespace) {
        Ok(migration) => migration,
        Err(error) => {
            eprintln!("tollgate migrate kong: {error}");
            return ExitCode::from(EX_USAGE);
        }
    };
    for warning in &migration.warnings {
        eprintln!("tollgate migrate kong: {warning}");
    }
    if !migration.tokens.is_empty() {
        match &args.tokens_out {
            None => eprintln!(
                "tollgate migrate kong: Kong oauth2_tokens: {} not written: pass --tokens-out \
                 FILE to import them through the admin API",
                migration.tokens.len()
            ),
            Some(path) => {
                if let Err(error) = write_private(path, migration.tokens_jsonl().as_bytes()) {
                    eprintln!(
                        "tollgate migrate kong: --tokens-out {}: {error}",
                        path.display()
                    );
                    return ExitCode::from(EX_USAGE);
                }
                eprintln!(
                    "tollgate migrate kong: Kong oauth2_tokens: {} written to {}",
                    migration.tokens.len(),
                    path.display()
                );
            }
        }
    }
    let text = match args.output {
        OutputFormat::Yaml => migration.to_yaml(&args.file.display().to_string()),
        OutputFormat::Json => migration.to_json(),
    };
    match std::io::stdout().write_all(text.as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

/// Writes a new file only its owner may read: it holds live tokens.
#[cfg(feature = "control-plane")]
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)
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
