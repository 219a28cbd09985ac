//! Unit tests of the token endpoint rules (below).
