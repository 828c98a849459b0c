//! The settings `tributary dev` runs with: the usual ones (defaults, `--config` file,
//! `TRIBUTARY_*` variables), except that what the developer left unset gets a development
//! default: a SQLite file, an embedded broker, a generated secret key, the log handler.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Context;
use base64::Engine;
use rand::RngCore;
use tributary_common::Config;

/// The database `tributary dev` uses unless `TRIBUTARY_DATABASE_URL` says otherwise.
pub const DEFAULT_DATABASE_URL: &str = "sqlite:tributary-dev.db";

/// Where a development secret key is kept when no database file suggests a place.
const DEFAULT_KEY_FILE: &str = "tributary-dev.key";

/// The process environment plus development overrides, loaded as one configuration.
pub struct DevSettings {
    file: Option<PathBuf>,
    /// Settings given in the environment or the file: never overridden.
    explicit: BTreeSet<String>,
    overrides: Vec<(String, String)>,
}

impl DevSettings {
    pub fn new(file: Option<&Path>) -> anyhow::Result<DevSettings> {
        let mut explicit: BTreeSet<String> = std::env::vars()
            .filter(|(_, value)| !value.trim().is_empty())
            .filter_map(|(name, _)| name.strip_prefix("TRIBUTARY_").map(str::to_ascii_lowercase))
            .collect();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let table: toml::Table =
                toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
            explicit.extend(table.keys().cloned());
        }
        Ok(DevSettings {
            file: file.map(Path::to_path_buf),
            explicit,
            overrides: Vec::new(),
        })
    }

    /// True when the developer set `key` (environment or file).
    pub fn is_explicit(&self, key: &str) -> bool {
        self.explicit.contains(key)
    }

    /// Sets `key` unless the developer set it.
    pub fn default_to(&mut self, key: &str, value: impl Into<String>) {
        if !self.is_explicit(key) {
            self.set(key, value);
        }
    }

    /// Sets `key`, whatever the developer set.
    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        let name = format!("TRIBUTARY_{}", key.to_ascii_uppercase());
        self.overrides.retain(|(n, _)| *n != name);
        self.overrides.push((name, value.into()));
    }

    pub fn load(&self) -> anyhow::Result<Config> {
        let env = std::env::vars().chain(self.overrides.iter().cloned());
        Ok(Config::load_from(self.file.as_deref(), env)?)
    }
}

/// The file of a `sqlite:` URL, if it names one (not `sqlite::memory:`).
pub fn sqlite_file(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite:")?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
}

/// The development key file: beside the SQLite file (`tributary-dev.db` gives
/// `tributary-dev.key`), else in the working directory.
pub fn key_file_for(database_url: &str) -> PathBuf {
    sqlite_file(database_url)
        .map(|db| db.with_extension("key"))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_KEY_FILE))
}

/// The key in `path`, or a new random one written there (readable by the owner only).
/// True when it was generated now.
pub fn read_or_generate_key(path: &Path) -> anyhow::Result<(String, bool)> {
    if let Ok(existing) = std::fs::read_to_string(path) {
        let key = existing.trim().to_string();
        if !key.is_empty() {
            return Ok((key, false));
        }
    }
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    let key = base64::engine::general_purpose::STANDARD.encode(bytes);
    write_private(path, &format!("{key}\n"))
        .with_context(|| format!("writing the development key to {}", path.display()))?;
    Ok((key, true))
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_lives_beside_the_sqlite_file() {
        assert_eq!(
            key_file_for("sqlite:tributary-dev.db"),
            PathBuf::from("tributary-dev.key")
        );
        assert_eq!(
            key_file_for("sqlite:///var/lib/t/app.db?mode=rwc"),
            PathBuf::from("/var/lib/t/app.key")
        );
        assert_eq!(
            key_file_for("sqlite::memory:"),
            PathBuf::from(DEFAULT_KEY_FILE)
        );
        assert_eq!(
            key_file_for("postgres://u@h/db"),
            PathBuf::from(DEFAULT_KEY_FILE)
        );
    }

    #[test]
    fn a_generated_key_is_kept_for_the_next_start() {
        let path = std::env::temp_dir().join(format!("tributary-key-{}", uuid::Uuid::new_v4()));
        let (first, generated) = read_or_generate_key(&path).expect("generated");
        assert!(generated);
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(&first)
                .expect("base64")
                .len(),
            32
        );
        let (second, generated_again) = read_or_generate_key(&path).expect("read back");
        assert_eq!((second, generated_again), (first, false));
        let _ = std::fs::remove_file(&path);
    }
}
