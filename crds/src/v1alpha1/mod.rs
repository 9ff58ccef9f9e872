//! `nixcache.dev/v1alpha1`.

mod backends;
mod cache_status;
mod features;
mod spec;
mod status;

pub use backends::*;
pub use cache_status::*;
pub use features::*;
pub use spec::*;
pub use status::*;
