//! tollgate-h1 against hyper's HTTP/1.1 client (`hyper::client::conn::http1`), the client it
//! replaced: the same requests, sent by both to a listener that records what arrives, must be
//! the same bytes; the same responses, read by both, must give the same status, fields and
//! body. Where the two differ, the difference is one the crate's docs list ([`known`]), and the
//! case says which, so that a difference appearing, or one going away, fails the test.
//!
//! The inputs are the fuzz corpus, `fuzz/corpus/upstream_response/` for responses and the
//! request material in `fuzz/corpus/path_normalize/` (targets) and `header_filter/` (field
//! names), and hand-written cases. Nothing waits on a clock: the listener answers once it has
//! read a whole request, and every exchange ends with a socket closed.

mod clients;
mod corpus;
mod known;
mod listener;
mod requests;
mod responses;
