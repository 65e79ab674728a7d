//! Several errors reported at once (a config's files, a database set): one line, each
//! cause in order, separated by "; ". Imports nothing from the crate, so any module may
//! use it.

use std::fmt;

/// Displays `items` joined by "; ".
pub struct Joined<'a, T>(pub &'a [T]);

impl<T: fmt::Display> fmt::Display for Joined<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}
