//! `crds/tollgate.yaml` is generated code: it must be exactly what `tollgate crdgen` prints.

use std::path::Path;

#[test]
fn committed_crds_match_the_rust_types() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crds/tollgate.yaml");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let generated = tollgate_api::resources::crds_yaml();
    // Not assert_eq!: a 600-line diff hides the one line that matters, the fix.
    assert!(
        committed == generated,
        "{} is out of date with the resource types: run \
         `cargo run -q -- crdgen > crds/tollgate.yaml` (or, without the binary, \
         `cargo run -q -p tollgate-api --example crdgen > crds/tollgate.yaml`) and commit it",
        path.display()
    );
}
