//! The ServiceAccount token the proxy proves itself with: a file read again before every Hello,
//! because Kubernetes rotates projected tokens (they last an hour by default). Its `Debug` shows
//! the path, never the token.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// Where the token is; read with [`TokenFile::read`] each time it is needed.
#[derive(Clone)]
pub struct TokenFile {
    path: PathBuf,
}

impl TokenFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        TokenFile { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The token as the file holds it now, without surrounding whitespace.
    pub fn read(&self) -> anyhow::Result<String> {
        let text = std::fs::read_to_string(&self.path)
            .with_context(|| format!("reading the token file {}", self.path.display()))?;
        let token = text.trim();
        if token.is_empty() {
            anyhow::bail!("the token file {} is empty", self.path.display());
        }
        Ok(token.to_string())
    }
}

impl std::fmt::Debug for TokenFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenFile")
            .field("path", &self.path)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_read_again_each_time() {
        let path =
            std::env::temp_dir().join(format!("smidge-token-read-again-{}", std::process::id()));
        std::fs::write(&path, "first\n").expect("write");
        let file = TokenFile::new(&path);
        assert_eq!(file.read().expect("read"), "first");
        std::fs::write(&path, "second").expect("write");
        assert_eq!(file.read().expect("read"), "second");
        std::fs::write(&path, "  \n").expect("write");
        assert!(file.read().is_err());
        assert!(!format!("{file:?}").contains("second"));
        let _ = std::fs::remove_file(&path);
    }
}
