//! The per-request cost of the path normaliser, measured apart from `make bench`.
//!
//! Every request's path goes through [`normalize`] before routing. A path with no `%`, no
//! `\`, no `//` and no dot segment is borrowed back after one scan; the rest are rebuilt. Run
//! with `cargo bench --locked -p tollgate-canon`.

use std::hint::black_box;

use tollgate_canon::header_name::{FORWARDED_HEADERS, judge};
use tollgate_canon::path::{match_prefix, normalize};

fn main() {
    divan::main();
}

/// The common case: a plain REST path, borrowed back.
#[divan::bench(sample_count = 200, sample_size = 5000)]
fn plain_path() -> bool {
    normalize(black_box("/event/api/v1/events/12345")).is_ok()
}

/// A path with an encoded character and a dot segment: rebuilt, one allocation.
#[divan::bench(sample_count = 200, sample_size = 5000)]
fn encoded_path() -> bool {
    normalize(black_box("/event/api/%7Ev1/../events/12345")).is_ok()
}

/// Matching one route prefix.
#[divan::bench(sample_count = 200, sample_size = 5000)]
fn prefix() -> Option<usize> {
    match_prefix(black_box("/event"), black_box("/event/api/v1/events/12345"))
}

/// Judging a header name with an underscore against the forwarded headers.
#[divan::bench(sample_count = 200, sample_size = 5000)]
fn underscore_header() -> bool {
    judge(black_box("custom_header_name"), FORWARDED_HEADERS, false)
        == tollgate_canon::header_name::Verdict::Keep
}
