//! TODO(helper)
pub struct RedisStore;
