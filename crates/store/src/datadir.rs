//! The data dir's file permissions: least privilege for what holds key hashes,
//! personal data and secrets. A new data dir is made 0700 and its files 0600
//! (SQLite gives a database's `-wal` and `-shm` files the mode of the database
//! file itself, so creating that file 0600 covers all three); an existing dir
//! or file with looser modes is reported at start, not silently changed.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

/// Creates `dir` (0700) if it is missing and returns one warning per entry
/// that others can read or write.
pub fn prepare(dir: &Path) -> io::Result<Vec<String>> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)?;
    looser_than_private(dir)
}

/// Opens (creating 0600 if missing) a file of the data dir for writing.
pub fn create_private(path: &Path) -> io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path)
}

/// Warnings for the dir and its files that group or others may access.
pub fn looser_than_private(dir: &Path) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            out.push(format!(
                "data dir {} has mode {mode:o}: other users can list it; run `chmod 700 {}`",
                dir.display(),
                dir.display()
            ));
        }
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if !meta.is_file() {
                continue;
            }
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                let p = entry.path();
                out.push(format!(
                    "{} has mode {mode:o}: other users can read it; run `chmod 600 {}`",
                    p.display(),
                    p.display()
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_new_dir_is_private_and_loose_modes_are_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        assert_eq!(prepare(&dir).unwrap(), Vec::<String>::new());
        assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        create_private(&dir.join("a.db")).unwrap();
        assert_eq!(std::fs::metadata(dir.join("a.db")).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(looser_than_private(&dir).unwrap().is_empty());

        std::fs::set_permissions(dir.join("a.db"), std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let warnings = prepare(&dir).unwrap();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("chmod 700"), "{warnings:?}");
        assert!(warnings[1].contains("a.db has mode 644"), "{warnings:?}");
    }
}
