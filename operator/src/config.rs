//! Operator-wide settings that shape what is rendered.

/// Repository of the proxy image used when a NixCache names none.
pub const DEFAULT_PROXY_REPOSITORY: &str = "ghcr.io/nixcache/nixcache";

/// The operator's version; the default proxy image carries the same tag.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Settings the builders need besides the NixCache itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The proxy image for NixCaches without `spec.image`.
    pub default_image: String,
}

impl Config {
    /// Settings from `NIXCACHE_OPERATOR_PROXY_IMAGE`: a repository (`ghcr.io/nixcache/nixcache`,
    /// tagged with the operator's version) or a full reference with a tag or digest (used as is).
    pub fn new(proxy_image: &str) -> Self {
        Self {
            default_image: default_image(proxy_image),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::new(DEFAULT_PROXY_REPOSITORY)
    }
}

/// `repository` tagged with [`VERSION`], unless it already names a tag or a digest.
pub fn default_image(repository: &str) -> String {
    let last = repository.rsplit('/').next().unwrap_or(repository);
    if repository.contains('@') || last.contains(':') {
        repository.to_owned()
    } else {
        format!("{repository}:{VERSION}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_gets_the_operator_version() {
        assert_eq!(
            default_image("ghcr.io/nixcache/nixcache"),
            format!("ghcr.io/nixcache/nixcache:{VERSION}")
        );
        // A registry port is not a tag.
        assert_eq!(
            default_image("registry:5000/nixcache"),
            format!("registry:5000/nixcache:{VERSION}")
        );
        assert_eq!(
            default_image("registry:5000/nixcache:dev"),
            "registry:5000/nixcache:dev"
        );
        assert_eq!(
            default_image("r.example/n@sha256:abcd"),
            "r.example/n@sha256:abcd"
        );
    }
}
