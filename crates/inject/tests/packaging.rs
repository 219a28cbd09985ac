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

/// `cargo build …` of the Makefile's `target` recipe, for the binary alone: `$(CARGO)` is
/// cargo, and the example programs `make run` also builds are not part of the image.
fn makefile_release_build(target: &str) -> Vec<String> {
    let makefile = read("Makefile");
    let recipe = makefile
        .split(&format!("\n{target}:\n"))
        .nth(1)
        .and_then(|rest| rest.lines().find(|l| l.starts_with('\t')))
        .unwrap_or_else(|| panic!("a `{target}:` target with a recipe in the Makefile"));
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

/// Each `cargo build …` of the Dockerfile's build stage (the RUN command, split at `&&`), with
/// where the step right after it installs the binary (`install … target/release/tollgate DEST`).
fn dockerfile_builds() -> Vec<(Vec<String>, String)> {
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
    let steps: Vec<Vec<String>> = run.split("&&").map(words).collect();
    let mut builds = Vec::new();
    for (at, step) in steps.iter().enumerate() {
        let Some(start) = step.iter().position(|w| w == "cargo") else {
            continue;
        };
        let install = steps
            .get(at + 1)
            .filter(|next| next.first().map(String::as_str) == Some("install"))
            .unwrap_or_else(|| panic!("an install right after {step:?}"));
        assert_eq!(
            install[install.len() - 2],
            "target/release/tollgate",
            "{install:?}"
        );
        builds.push((step[start..].to_vec(), install[install.len() - 1].clone()));
    }
    builds
}

#[test]
fn the_image_is_built_with_the_makefile_s_release_commands() {
    let full = makefile_release_build("build");
    assert_eq!(
        full,
        [
            "cargo",
            "build",
            "--release",
            "--locked",
            "--bin",
            "tollgate"
        ]
    );
    // The sidecar-only binary: the same, without the `control-plane` feature.
    let sidecar = makefile_release_build("build-sidecar");
    assert_eq!(
        sidecar,
        [
            "cargo",
            "build",
            "--release",
            "--locked",
            "--no-default-features",
            "--bin",
            "tollgate"
        ]
    );
    // Each is copied out before the next build overwrites target/release/tollgate.
    assert_eq!(
        dockerfile_builds(),
        [
            (full, "/out/tollgate".to_owned()),
            (sidecar, "/out/tollgate-sidecar".to_owned())
        ]
    );
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
    // Only the two binaries go from the build stage to the image; injected containers run
    // the sidecar-only one.
    let copies: Vec<String> = dockerfile
        .lines()
        .filter(|l| l.starts_with("COPY --from"))
        .map(str::to_owned)
        .collect();
    assert_eq!(
        copies,
        [
            "COPY --from=build /out/tollgate /usr/local/bin/tollgate".to_owned(),
            format!(
                "COPY --from=build /out/tollgate-sidecar {}",
                tollgate_inject::SIDECAR_COMMAND
            ),
        ]
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
        read("charts/tollgate/files/crds.yaml") == read("crds/tollgate.yaml"),
        "charts/tollgate/files/crds.yaml differs from crds/tollgate.yaml: run `make crds`"
    );
}

/// After `make run` (`build-sidecar`), `target/release/tollgate` must not be the sidecar-only
/// build, whose missing `controller` the README's next step needs: it is moved aside as
/// `tollgate-sidecar`, the name the image gives it.
#[test]
fn the_sidecar_only_build_gets_its_own_name() {
    let makefile = read("Makefile");
    let recipe: Vec<&str> = makefile
        .split("\nbuild-sidecar:\n")
        .nth(1)
        .expect("a build-sidecar target")
        .lines()
        .take_while(|l| l.starts_with('\t'))
        .collect();
    assert_eq!(
        recipe.last().map(|l| words(l)),
        Some(
            [
                "mv",
                "-f",
                "$(RELEASE_DIR)/tollgate",
                "$(RELEASE_DIR)/tollgate-sidecar"
            ]
            .map(str::to_owned)
            .to_vec()
        ),
        "{recipe:?}"
    );
    assert!(read("scripts/run-demo.sh").contains("\"$bin/tollgate-sidecar\" sidecar"));
}
