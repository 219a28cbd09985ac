//! Runtime choice between the stores. TODO(helper)
pub enum AnyTokenStore {}
