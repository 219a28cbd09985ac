//! `tollgate inject -f FILE`: reads a manifest, prints it injected. The binary only prints.

use std::io::Read;
use std::path::PathBuf;

use crate::{InjectArgs, Injected, inject_manifest};

/// Print a manifest with the sidecar injected into its pods and pod templates, as the webhook
/// of an opted-in namespace would (for GitOps and for review, like `istioctl kube-inject`).
#[derive(Clone, Debug, clap::Args)]
pub struct InjectCommand {
    /// The manifest (YAML or JSON, several documents allowed), or - for standard input.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub filename: PathBuf,

    #[command(flatten)]
    pub inject: InjectArgs,
}

/// The injected manifest, or every problem, each naming its flag or the file.
pub fn run(command: &InjectCommand) -> Result<Injected, Vec<String>> {
    let config = command.inject.to_config();
    let stdin = command.filename.as_os_str() == "-";
    let name = match stdin {
        true => "standard input".to_owned(),
        false => command.filename.display().to_string(),
    };
    let text = if stdin {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map(|_| text)
            .map_err(|e| format!("standard input: {e}"))
    } else {
        std::fs::read_to_string(&command.filename).map_err(|e| format!("{name}: {e}"))
    };
    let (config, text) = match (config, text) {
        (Ok(config), Ok(text)) => (config, text),
        (config, text) => {
            let mut errors = config.err().unwrap_or_default();
            errors.extend(text.err());
            return Err(errors);
        }
    };
    inject_manifest(&text, &config).map_err(|e| vec![format!("{name}: {e}")])
}
