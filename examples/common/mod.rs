//! Code the examples share.

/// CPU seconds (user + system, all threads) this process has used so far:
/// `clock_gettime(CLOCK_PROCESS_CPUTIME_ID)`, the clock Python's `time.process_time()` reads on
/// the peers' side (exact; `/proc/self/stat`'s 10 ms ticks quantised a 0.6 s sampling run by
/// 1.6 %). Time the process spent waiting for a core on a shared machine does not count.
pub fn cpu_seconds() -> Option<f64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable `timespec`, the only memory the call writes.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    (rc == 0).then_some(ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9)
}
