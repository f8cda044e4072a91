//! Permissions: the patterns a plugin holds, and how one matches a name.
//!
//! A permission is a string such as `service:weather` or
//! `event:emit:weather:updated`; a trailing `*` matches any suffix
//! (`event:emit:weather:*`, `service:*`). A plugin holds a permission only if
//! its manifest requested it; the operator's grants narrow that further.

/// The permissions a plugin holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions {
    patterns: Vec<String>,
}

impl Permissions {
    /// Permissions from a list of patterns.
    pub fn new(patterns: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            patterns: patterns.into_iter().map(Into::into).collect(),
        }
    }

    /// Whether `permission` is held.
    pub fn allows(&self, permission: &str) -> bool {
        self.patterns
            .iter()
            .any(|pattern| matches(pattern, permission))
    }

    /// The patterns held.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }
}

/// Whether `pattern` (exact, or ending in `*`) matches `name`.
pub fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_wildcard_patterns() {
        let held = Permissions::new(["service:weather", "event:emit:weather:*"]);
        assert!(held.allows("service:weather"));
        assert!(!held.allows("service:weathers"));
        assert!(!held.allows("service:geolocation"));
        assert!(held.allows("event:emit:weather:updated"));
        assert!(!held.allows("event:emit:notes:saved"));
        assert!(Permissions::new(["service:*"]).allows("service:anything"));
        assert!(!Permissions::default().allows("service:weather"));
    }
}
