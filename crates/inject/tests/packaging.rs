//! The image and the chart agree with the build: no Docker engine or helm binary runs here, so
//! `make image` and the chart are kept correct by construction, and checked by these tests.
//! (The chart's rendered objects are tested by `make chart-test`.)

use std::path::Path;

fn read(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The words of a shell command, joined across `\` line continuations.
fn words(command: &str) -> Vec<String> {
    command
        .replace("\\\n", " ")
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// `cargo build …` of the Makefile's `build` recipe, for the binary alone: `$(CARGO)` is
/// cargo, and the example programs `make run` also builds are not part of the image.
fn makefile_release_build() -> Vec<String> {
    let makefile = read("Makefile");
    let recipe = makefile
        .split("\nbuild:\n")
        .nth(1)
        .and_then(|rest| rest.lines().find(|l| l.starts_with('\t')))
        .expect("a `build:` target with a recipe in the Makefile");
    let mut command = Vec::new();
    let mut words = words(recipe).into_iter();
    while let Some(word) = words.next() {
        match word.as_str() {
            "$(CARGO)" => command.push("cargo".to_owned()),
            "--example" => {
                words.next();
            }
            _ => command.push(word),
        }
    }
    command
}

/// The `cargo build …` of the Dockerfile's build stage (the RUN command, up to `&&`).
fn dockerfile_build() -> Vec<String> {
    let dockerfile = read("Dockerfile");
    let run = dockerfile
        .split("\nRUN ")
        .skip(1)
        .map(|rest| {
            let mut command = String::new();
            for line in rest.lines() {
                command.push_str(line.trim_end_matches('\\'));
                command.push(' ');
                if !line.ends_with('\\') {
                    break;
                }
            }
            command
        })
        .find(|command| command.contains("cargo build"))
        .expect("a RUN cargo build in the Dockerfile");
    let words = words(&run);
    let start = words
        .iter()
        .position(|w| w == "cargo")
        .expect("cargo in the RUN command");
    words[start..]
        .iter()
        .take_while(|w| *w != "&&")
        .cloned()
        .collect()
}

#[test]
fn the_image_is_built_with_the_makefile_s_release_command() {
    let make = makefile_release_build();
    assert_eq!(
        make,
        [
            "cargo",
            "build",
            "--release",
            "--locked",
            "--bin",
            "tollgate"
        ]
    );
    assert_eq!(dockerfile_build(), make);
}

#[test]
fn the_image_runs_the_binary_as_non_root_on_a_small_base() {
    let dockerfile = read("Dockerfile");
    let stages: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert_eq!(stages.len(), 2, "a build stage and a runtime stage");
    assert!(stages[0].contains("rust:1-bookworm"), "{}", stages[0]);
    assert!(
        stages[1].contains("distroless/cc-debian12:nonroot"),
        "{}",
        stages[1]
    );
    assert!(dockerfile.contains("\nUSER 65532:65532\n"));
    assert!(dockerfile.contains("\nENTRYPOINT [\"/usr/local/bin/tollgate\"]\n"));
    // Only the binary goes from the build stage to the image.
    let copies: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("COPY --from"))
        .collect();
    assert_eq!(
        copies,
        ["COPY --from=build /out/tollgate /usr/local/bin/tollgate"]
    );
    // The build context leaves out build output.
    assert!(read(".dockerignore").lines().any(|l| l == "/target"));
}

#[test]
fn the_makefile_image_tag_is_the_chart_s_default_image() {
    let chart = read("charts/tollgate/Chart.yaml");
    let app_version = chart
        .lines()
        .find_map(|l| l.strip_prefix("appVersion: "))
        .map(|v| v.trim_matches('"'))
        .expect("appVersion in Chart.yaml");
    assert_eq!(app_version, env!("CARGO_PKG_VERSION"));
    let values = read("charts/tollgate/values.yaml");
    assert!(values.contains("\n  repository: tollgate\n"));
    // `make image` tags tollgate:<version>, the chart runs repository:appVersion, and
    // `tollgate inject -f` injects its own version by default: the same image.
    assert!(read("Makefile").contains("IMAGE ?= tollgate:$(VERSION)"));
    assert_eq!(
        tollgate_inject::InjectConfig::new(concat!("tollgate:", env!("CARGO_PKG_VERSION"))),
        {
            use clap::Parser;
            #[derive(Parser)]
            struct Cli {
                #[command(flatten)]
                inject: tollgate_inject::InjectArgs,
            }
            Cli::parse_from(["test"]).inject.to_config().unwrap()
        }
    );
}

#[test]
fn the_chart_crds_are_the_generated_ones() {
    assert!(
        read("charts/tollgate/crds/tollgate.yaml") == read("crds/tollgate.yaml"),
        "charts/tollgate/crds/tollgate.yaml differs from crds/tollgate.yaml: run `make deploy`"
    );
}
