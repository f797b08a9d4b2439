//! Cooperative interruption of long jobs (Ctrl-C, SIGTERM, Python's KeyboardInterrupt).
//!
//! A front end (the CLI's signal handler, the Python package's progress callback) calls
//! [`request_stop`]; the training loop checks [`stop_requested`] after every optimizer step and
//! returns [`crate::train::TrainError::Interrupted`], leaving the last complete checkpoint on
//! disk, and the sample job stops before its output file is renamed into place, so that no
//! partial file remains. The flag is process-wide.

use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

/// Asks every running job to stop at its next safe point.
pub fn request_stop() {
    STOP.store(true, Ordering::SeqCst);
}

/// Clears a stop request (before starting a new job).
pub fn clear_stop() {
    STOP.store(false, Ordering::SeqCst);
}

/// Whether a stop was requested.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::Relaxed)
}
