//! [`Scratch`]: the files, and at most the one directory, that a command creates. They are
//! removed when the command ends, on success, on failure and on Ctrl-C (which drops the
//! command), unless `--keep`, which prints what it kept. [`Output`]: a file the command writes
//! for the user (the bench chart), claimed before the run and kept only when the run succeeds.

use std::io;
use std::path::{Path, PathBuf};

/// A command's directory and the files it created there.
pub struct Scratch {
    dir: PathBuf,
    made_dir: bool,
    files: Vec<PathBuf>,
    keep: bool,
}

impl Scratch {
    /// Uses `dir`, creating it if it is missing. Only `dir` itself is created, never a missing
    /// parent: a typo in a path fails instead of growing a tree.
    ///
    /// # Errors
    ///
    /// The directory cannot be created (its parent is missing, read-only, or it is a file).
    pub fn new(dir: &Path, keep: bool) -> Result<Scratch, String> {
        let made_dir = match std::fs::create_dir(dir) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => false,
            Err(e) => {
                let hint = if e.kind() == io::ErrorKind::NotFound { " (its parent must exist)" } else { "" };
                return Err(format!("cannot use directory {}: {e}{hint}", dir.display()));
            }
        };
        Ok(Scratch { dir: dir.to_path_buf(), made_dir, files: Vec::new(), keep })
    }

    /// The path of file `name` in the directory. Unless the file exists already (a run with
    /// `--keep` left it, and it is reused), this command is taken to create it, and it is
    /// removed at the end.
    pub fn file(&mut self, name: &str) -> PathBuf {
        let path = self.dir.join(name);
        if !path.exists() {
            self.files.push(path.clone());
        }
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.keep {
            for file in self.files.iter().filter(|f| f.exists()) {
                eprintln!("kept: {}", file.display());
            }
            return;
        }
        for file in &self.files {
            let _ = std::fs::remove_file(file);
        }
        if self.made_dir {
            // Only when empty: a file someone else put there meanwhile stays, and so does the
            // directory.
            let _ = std::fs::remove_dir(&self.dir);
        }
    }
}

/// A file the command writes for the user at the end of a run, opened for writing before the
/// run starts, so a path that cannot be written (a missing directory, a read-only filesystem, a
/// directory) is refused before minutes of work. Unless [`keep`](Self::keep) is called, it is
/// removed again on drop if this command created it; a file that was there before stays as it
/// was (it is opened without truncating).
pub struct Output {
    path: PathBuf,
    made: bool,
}

impl Output {
    /// Claims `path`.
    ///
    /// # Errors
    ///
    /// `path` cannot be opened for writing.
    pub fn claim(path: &Path) -> io::Result<Output> {
        let made = !path.exists();
        std::fs::OpenOptions::new().write(true).create(true).truncate(false).open(path)?;
        Ok(Output { path: path.to_path_buf(), made })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The run succeeded and wrote the file: it stays.
    pub fn keep(mut self) {
        self.made = false;
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        if self.made {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
