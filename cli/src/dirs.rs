//! Where the data directory is when `--data-dir` (or `BREAKWATER_DATA_DIR`)
//! is not given: `$STATE_DIRECTORY` under systemd (`StateDirectory=`), else
//! `$XDG_DATA_HOME/breakwater`, else `~/.local/share/breakwater`, the order
//! in which systemd-run tools, cargo and ripgrep resolve their own.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

/// The data directory: `given` if set, else the default for `env`.
pub fn resolve(given: Option<&Path>, env: impl Fn(&str) -> Option<OsString>) -> Result<PathBuf> {
    if let Some(given) = given {
        return Ok(given.to_path_buf());
    }
    // Empty or relative values are ignored, as the XDG base directory
    // specification asks. systemd lists several state directories separated
    // by ':' when a unit names several; the first is ours.
    let absolute = |name: &str| {
        env(name)
            .map(PathBuf::from)
            .filter(|path| path.is_absolute())
    };
    if let Some(state) = env("STATE_DIRECTORY") {
        let first = state.to_string_lossy().split(':').next().map(PathBuf::from);
        if let Some(first) = first.filter(|path| path.is_absolute()) {
            return Ok(first);
        }
    }
    if let Some(data_home) = absolute("XDG_DATA_HOME") {
        return Ok(data_home.join("breakwater"));
    }
    if let Some(home) = absolute("HOME") {
        return Ok(home.join(".local").join("share").join("breakwater"));
    }
    bail!(
        "no data directory: pass --data-dir DIR (or set BREAKWATER_DATA_DIR, XDG_DATA_HOME or HOME)"
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |name| {
            vars.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| OsString::from(value))
        }
    }

    #[test]
    fn precedence() {
        let all = [
            ("STATE_DIRECTORY", "/var/lib/breakwater:/var/lib/other"),
            ("XDG_DATA_HOME", "/x"),
            ("HOME", "/home/a"),
        ];
        assert_eq!(
            resolve(Some(Path::new("d")), env(&all)).unwrap(),
            PathBuf::from("d")
        );
        assert_eq!(
            resolve(None, env(&all)).unwrap(),
            PathBuf::from("/var/lib/breakwater")
        );
        assert_eq!(
            resolve(None, env(&all[1..])).unwrap(),
            PathBuf::from("/x/breakwater")
        );
        assert_eq!(
            resolve(None, env(&all[2..])).unwrap(),
            PathBuf::from("/home/a/.local/share/breakwater")
        );
        // Empty and relative values do not count.
        let odd = [
            ("STATE_DIRECTORY", ""),
            ("XDG_DATA_HOME", "rel"),
            ("HOME", "/h"),
        ];
        assert_eq!(
            resolve(None, env(&odd)).unwrap(),
            PathBuf::from("/h/.local/share/breakwater")
        );
        let error = resolve(None, env(&[])).unwrap_err().to_string();
        assert!(error.contains("--data-dir"), "{error}");
    }
}
