//! The two planes are siblings: the controller builds on the shared crates (api, store, serve,
//! admin, inject), never on the sidecar's assembly, so a change to the data plane's request
//! path cannot break the control plane's build, nor ship in its binary.

#[test]
fn the_controller_does_not_depend_on_the_sidecar() {
    let manifest = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .expect("the controller's Cargo.toml");
    let named: Vec<&str> = manifest
        .lines()
        .filter(|line| line.trim_start().starts_with("tollgate-"))
        .map(|line| line.split(['.', ' ', '=']).next().unwrap_or(line).trim())
        .collect();
    assert!(
        named.contains(&"tollgate-serve") && named.contains(&"tollgate-store"),
        "{named:?}"
    );
    assert!(!named.contains(&"tollgate-sidecar"), "{named:?}");
}
