//! Atomic file output: write to a temporary file in the target's directory, then rename, so a
//! reader never sees a half-written file and a failed write leaves nothing behind.

use std::io::Write;
use std::path::Path;

/// The temporary file of an atomic write to `path`: `.NAME.XXXX` + `suffix` (e.g. `.tmp`; a
/// writer that picks the format from the extension needs `.tmp.png`) in `path`'s directory
/// (so the final rename stays on one file system), created with ordinary file permissions (0666
/// minus the user's umask, 0644 by default) instead of the private 0600 of temporary files, so
/// that a group sharing a directory can read the output. Every atomic write of hepflow starts
/// here.
pub fn temp_file_next_to(path: &Path, suffix: &str) -> std::io::Result<tempfile::NamedTempFile> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let prefix = format!(".{name}.");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(suffix);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    builder.tempfile_in(dir)
}

/// Writes the file at `path` atomically with the bytes produced by `fill`.
pub fn atomic_write_with(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut tmp = temp_file_next_to(path, ".tmp")?;
    {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
        fill(&mut w)?;
        w.flush()?;
    }
    tmp.as_file().sync_all().ok();
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Writes `bytes` to `path` atomically.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    atomic_write_with(path, |w| w.write_all(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn files_get_the_umask_permissions_not_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.json");
        atomic_write(&p, b"{}").unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        // Whatever the umask, group and others get what it allows, never the private 0600
        // of temporary files (unless the umask itself is 077).
        let umask = current_umask();
        assert_eq!(mode, 0o666 & !umask, "mode {mode:o}, umask {umask:o}");
        assert_eq!(std::fs::read(&p).unwrap(), b"{}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    /// The process umask, read from /proc (Linux) or assumed 022.
    #[cfg(unix)]
    fn current_umask() -> u32 {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("Umask:"))
                    .and_then(|l| u32::from_str_radix(l[6..].trim(), 8).ok())
            })
            .unwrap_or(0o022)
    }
}
