//! `nixcache.dev/v1alpha1`.

mod backends;
mod features;
mod spec;
mod status;

pub use backends::*;
pub use features::*;
pub use spec::*;
pub use status::*;
