//! Prints the CRDs, like `tollgate crdgen`, for when only this crate is built:
//! `cargo run -q -p tollgate-api --example crdgen > crds/tollgate.yaml`.
fn main() {
    print!("{}", tollgate_api::resources::crds_yaml());
}
