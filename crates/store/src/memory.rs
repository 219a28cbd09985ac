//! TODO(helper)
pub struct MemoryStore;
