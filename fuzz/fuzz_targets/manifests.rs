//! Defends standalone mode's manifest loader (`manifests::load_str`: multi-document YAML,
//! `kind: List`, our kinds and Secrets) and the compiler over what it loaded
//! (`tollgate_api::compile`), which the controller also runs over whatever users apply.
//!
//! Input: the text of one manifest file. Invariants: no panic; an error is one line that
//! starts with the file's name; compiling accounts for every object (each one is served or
//! has exactly one error); the snapshot survives the stream to the sidecars (its JSON line
//! reads back as the same snapshot).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use tollgate_api::compile::Compiled;
use tollgate_api::manifests::load_str;
use tollgate_api::stream::{Frame, snapshot_line};

const FILE: &str = "fuzz.yaml";

fuzz_target!(|data: &[u8]| {
    // The loader refuses non-UTF-8 files before parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let resources = match load_str(Path::new(FILE), text) {
        Ok(resources) => resources,
        Err(error) => {
            let line = error.to_string();
            assert!(line.starts_with(&format!("{FILE}: ")), "{line}");
            assert!(!line.contains(['\n', '\r']), "{line:?}");
            return;
        }
    };

    let Compiled { snapshot, errors } = tollgate_api::compile(&resources);
    let errors_of = |kind: &str| errors.iter().filter(|e| e.kind == kind).count();
    assert_eq!(
        snapshot.services.len() + errors_of("OAuthService"),
        resources.services.len()
    );
    assert_eq!(
        snapshot.consumers.len() + errors_of("Consumer"),
        resources.consumers.len()
    );
    assert_eq!(
        snapshot.applications.len() + errors_of("OAuthApplication"),
        resources.applications.len()
    );

    let line = snapshot_line(&snapshot);
    let frame: Frame = serde_json::from_slice(&line).expect("a snapshot line reads back");
    assert_eq!(frame, Frame::Snapshot { snapshot });
});
