//! Containing panics of third-party readers.
//!
//! The Parquet and ROOT crates can panic on malformed input (an index past a buffer, an
//! `unwrap` on a damaged header). [`guard`] runs such a reader, turns a panic into
//! [`IoError::Corrupt`] ("FILE: invalid or corrupt FORMAT file ...") and keeps the panic message
//! and backtrace off the user's terminal: the first call installs, once per process, a panic hook
//! that stays silent while the panicking thread is inside a guarded section (a thread-local depth
//! counter) and delegates to the previous hook otherwise, so real bugs elsewhere still print.
//!
//! Only panics on the calling thread are caught: a reader that spawns threads must be guarded
//! inside each of them. A failed allocation aborts the process and cannot be caught; readers must
//! check declared sizes before allocating.

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::sync::Once;

use super::IoError;

thread_local! {
    /// Guarded sections the current thread is inside.
    static DEPTH: Cell<usize> = const { Cell::new(0) };
}

static HOOK: Once = Once::new();

fn install_hook() {
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if DEPTH.with(Cell::get) == 0 {
                previous(info);
            }
        }));
    });
}

/// Leaves a guarded section also when the body unwinds.
struct Section;

impl Section {
    fn enter() -> Section {
        DEPTH.with(|d| d.set(d.get() + 1));
        Section
    }
}

impl Drop for Section {
    fn drop(&mut self) {
        DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    }
}

/// Runs `body` (a reader of `file`), reporting a panic inside it as
/// `IoError::Corrupt { format, .. }` without printing the panic.
pub fn guard<T>(
    file: &Path,
    format: &'static str,
    body: impl FnOnce() -> Result<T, IoError>,
) -> Result<T, IoError> {
    install_hook();
    let result = {
        let _section = Section::enter();
        panic::catch_unwind(AssertUnwindSafe(body))
    };
    result.unwrap_or_else(|_| {
        Err(IoError::Corrupt {
            file: file.to_path_buf(),
            format,
            reason: format!("the {format} reader stopped on malformed data"),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_become_corrupt_errors_and_depth_recovers() {
        let p = Path::new("x.parquet");
        let e = guard::<()>(p, "parquet", || panic!("index out of bounds")).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, IoError::Corrupt { .. }), "{msg}");
        assert!(
            msg.contains("x.parquet") && !msg.contains("index out of bounds"),
            "{msg}"
        );
        assert_eq!(DEPTH.with(Cell::get), 0);
        // Nested sections and ordinary results pass through.
        let v = guard(p, "parquet", || guard(p, "parquet", || Ok(7)));
        assert_eq!(v.unwrap(), 7);
        let e = guard::<()>(p, "parquet", || {
            Err(IoError::Empty {
                file: p.to_path_buf(),
            })
        });
        assert!(matches!(e, Err(IoError::Empty { .. })));
        assert_eq!(DEPTH.with(Cell::get), 0);
    }
}
