//! Writing a generated PKI to disk: keys `0600`, never into a non-empty
//! directory unless forced, and nothing written at all when refusing.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{layout, PkiError};

/// One file of a PKI, relative to its root.
#[derive(Clone)]
pub struct PkiFile {
    pub path: PathBuf,
    pub contents: Vec<u8>,
    /// Private keys: created `0600`.
    pub secret: bool,
}

impl std::fmt::Debug for PkiFile {
    // Never let a private key reach a log through `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PkiFile")
            .field("path", &self.path)
            .field("len", &self.contents.len())
            .field("secret", &self.secret)
            .finish()
    }
}

/// The top-level entries a PKI owns; `--force` replaces exactly these.
const PKI_ENTRIES: [&str; 7] = [
    super::MANIFEST_FILE,
    layout::CA_DIR,
    layout::UNTRUSTED_CA_DIR,
    layout::SERVER_DIR,
    layout::CLIENTS_DIR,
    layout::VARIANTS_DIR,
    layout::MUTATIONS_DIR,
];

/// Refuse a non-empty `dir` unless `force`; a missing `dir` is fine.
pub fn check_target(dir: &Path, force: bool) -> Result<(), PkiError> {
    match fs::read_dir(dir) {
        Ok(mut entries) => match entries.next().is_some() && !force {
            true => Err(PkiError::NotEmpty(dir.to_path_buf())),
            false => Ok(()),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            Err(PkiError::NotADirectory(dir.to_path_buf()))
        }
        Err(source) => Err(PkiError::Io {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

/// Write `files` under `dir`. Refuses a non-empty `dir` unless `force`; with
/// `force` over an earlier PKI, that PKI's entries are removed first so no
/// stale key (a dropped service, an old intermediate) is left behind.
pub fn write_files(dir: &Path, files: &[PkiFile], force: bool) -> Result<(), PkiError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PkiError::Io { path, source }
    };
    check_target(dir, force)?;
    if force && dir.join(super::MANIFEST_FILE).is_file() {
        for entry in PKI_ENTRIES {
            let path = dir.join(entry);
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => fs::remove_dir_all(&path).map_err(io(&path))?,
                Ok(_) => fs::remove_file(&path).map_err(io(&path))?,
                Err(_) => {}
            }
        }
    }
    fs::create_dir_all(dir).map_err(io(dir))?;
    for file in files {
        let path = dir.join(&file.path);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io(parent))?;
        }
        write_one(&path, &file.contents, file.secret).map_err(io(&path))?;
    }
    Ok(())
}

fn write_one(path: &Path, contents: &[u8], secret: bool) -> std::io::Result<()> {
    let mode = if secret { 0o600 } else { 0o644 };
    // Write beside the target and rename, so a reader (a watching server)
    // never sees a half-written file, and a key is never briefly readable.
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.certshift-tmp"));
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(contents)?;
    f.sync_all()?;
    drop(f);
    // create_new's mode is filtered by the umask; make it exact.
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
    fs::rename(&tmp, path)
}
