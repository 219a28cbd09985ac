//! Test harness. TODO(helper)
