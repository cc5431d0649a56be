//! A string that must never reach a log: its `Debug` and `Display` print `***`.
//! [`debug_eq`] compares two values by their `Debug` text with the secrets in
//! it, for config sections that have no `PartialEq`; that text never leaves it.
//!
//! ```
//! use rampart_core::config::secret::Secret;
//! let s = Secret::new("redis://:hunter2@cache:6379/");
//! assert_eq!(format!("{s:?} {s}"), "*** ***");
//! assert!(s.expose().contains("hunter2"));
//! ```

use std::cell::Cell;
use std::fmt;

use serde::Deserialize;

#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

thread_local! {
    /// Set only inside [`debug_eq`], on its own thread.
    static REVEALED: Cell<bool> = const { Cell::new(false) };
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if REVEALED.with(Cell::get) {
            write!(f, "Secret({:?})", self.0)
        } else {
            f.write_str("***")
        }
    }
}

/// Whether `a` and `b` print the same `Debug` text, secrets included (where
/// a plain `format!("{a:?}")` would print every secret as `***` and miss a
/// change of one). The texts are compared and dropped here.
pub fn debug_eq(a: &dyn fmt::Debug, b: &dyn fmt::Debug) -> bool {
    /// Puts the flag back even if a `Debug` impl panics.
    struct Reveal;
    impl Drop for Reveal {
        fn drop(&mut self) {
            REVEALED.with(|r| r.set(false));
        }
    }
    REVEALED.with(|r| r.set(true));
    let _reveal = Reveal;
    format!("{a:?}") == format!("{b:?}")
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_eq_sees_secrets_that_debug_hides() {
        let (a, b) = (Secret::new("one"), Secret::new("two"));
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        assert!(!debug_eq(&(1, &a), &(1, &b)));
        assert!(debug_eq(&(1, &a), &(1, Secret::new("one"))));
        assert!(!debug_eq(&(1, &a), &(2, &a)));
        // Hidden again afterwards.
        assert_eq!(format!("{a:?}"), "***");
    }
}
