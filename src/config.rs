//! [`IoEngineConfig`]: the `[io]` table of a TOML config file, its defaults, its validation and
//! the `FERRITE_IO_ENGINE` environment override.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Deserializer};

use crate::error::{Error, Result};

/// Which engine [`create_engine`](crate::create_engine) builds.
///
/// ```
/// use ferrite_io::EngineChoice;
/// assert_eq!("tokio".parse::<EngineChoice>()?, EngineChoice::Tokio);
/// assert!("tokyo".parse::<EngineChoice>().is_err());
/// assert_eq!(EngineChoice::default().to_string(), "auto");
/// # Ok::<(), ferrite_io::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineChoice {
    /// io_uring when the probe succeeds, else tokio with one warning naming why.
    #[default]
    Auto,
    /// io_uring or an error naming why not.
    Uring,
    /// The tokio engine; io_uring is never touched.
    Tokio,
}

impl fmt::Display for EngineChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EngineChoice::Auto => "auto",
            EngineChoice::Uring => "uring",
            EngineChoice::Tokio => "tokio",
        })
    }
}

/// The environment variable that overrides the configured engine (see
/// [`EngineChoice::from_env`]).
pub const ENGINE_ENV: &str = "FERRITE_IO_ENGINE";

impl EngineChoice {
    /// The engine named by the [`ENGINE_ENV`] (`FERRITE_IO_ENGINE`) environment variable, or
    /// `None` when it is unset or empty. The library never reads it on its own: a program that
    /// wants the override applies it (the `ferrite-io` CLI does, below its `--engine` flag and
    /// above the config file).
    ///
    /// ```
    /// let mut config = ferrite_io::IoEngineConfig::default();
    /// if let Some(engine) = ferrite_io::EngineChoice::from_env()? {
    ///     config.engine = engine;
    /// }
    /// # Ok::<(), ferrite_io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the variable when its value is not `auto`, `uring` or `tokio`.
    pub fn from_env() -> Result<Option<Self>> {
        match std::env::var(ENGINE_ENV) {
            Ok(value) if value.is_empty() => Ok(None),
            Ok(value) => value.parse().map(Some).map_err(|_| bad(ENGINE_ENV, value, ENGINE_VALUES)),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(value)) => Err(bad(ENGINE_ENV, value.to_string_lossy(), ENGINE_VALUES)),
        }
    }
}

const ENGINE_VALUES: &str = "one of \"auto\", \"uring\", \"tokio\"";

impl std::str::FromStr for EngineChoice {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(EngineChoice::Auto),
            "uring" => Ok(EngineChoice::Uring),
            "tokio" => Ok(EngineChoice::Tokio),
            other => Err(bad("io.engine", other, ENGINE_VALUES)),
        }
    }
}

/// The I/O layer's configuration, the `[io]` table of Ferrite's config file.
///
/// ```toml
/// [io]
/// engine = "auto"           # "auto", "uring" or "tokio"
/// uring_entries = 256       # submission queue size per ring, a power of two in 1..=32768
/// rings = 0                 # io_uring rings, 0 = one per CPU, at most 64
/// registered_buffers = 64   # pool slots, registered as io_uring fixed buffers, 1..=16384
/// buffer_size = 65536       # bytes per slot, a multiple of 4096, at most 1 GiB
/// direct_io = false         # open data files with O_DIRECT
/// nowait_fast_path = true   # try preadv2/pwritev2(RWF_NOWAIT) inline before the ring or pool
/// ```
///
/// ```
/// let config = ferrite_io::IoEngineConfig::from_toml_str("[io]\nengine = \"tokio\"\n")?;
/// assert_eq!(config.engine, ferrite_io::EngineChoice::Tokio);
/// assert_eq!(config.uring_entries, 256);
/// # Ok::<(), ferrite_io::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IoEngineConfig {
    /// The engine to build.
    pub engine: EngineChoice,
    /// io_uring submission queue entries, per ring.
    #[serde(deserialize_with = "checked_uring_entries")]
    pub uring_entries: u32,
    /// io_uring rings; 0 means one per CPU. Submitters use the ring of the CPU they run on.
    #[serde(deserialize_with = "checked_rings")]
    pub rings: u32,
    /// Number of pool buffers (fixed buffers on io_uring).
    #[serde(deserialize_with = "checked_registered_buffers")]
    pub registered_buffers: u32,
    /// Bytes per pool buffer.
    #[serde(deserialize_with = "checked_buffer_size")]
    pub buffer_size: usize,
    /// Whether files the engine opens use `O_DIRECT` when their `OpenOptions` do not say.
    pub direct_io: bool,
    /// Whether single reads and writes on buffered files first try `RWF_NOWAIT` inline (page
    /// cache hits then cost one plain syscall and no ring round trip or thread hop).
    pub nowait_fast_path: bool,
}

impl Default for IoEngineConfig {
    fn default() -> Self {
        IoEngineConfig {
            engine: EngineChoice::Auto,
            uring_entries: 256,
            rings: 0,
            registered_buffers: 64,
            buffer_size: 64 * 1024,
            direct_io: false,
            nowait_fast_path: true,
        }
    }
}

/// Largest ring the kernel accepts without `IORING_SETUP_CLAMP`. This and the limits below
/// bound the `[io]` keys; [`IoEngineConfig::validate`] checks them.
///
/// ```
/// use ferrite_io::config::{BUFFER_ALIGN, MAX_BUFFER_SIZE, MAX_URING_ENTRIES};
/// use ferrite_io::IoEngineConfig;
/// let biggest = IoEngineConfig { uring_entries: MAX_URING_ENTRIES, buffer_size: MAX_BUFFER_SIZE, ..Default::default() };
/// assert!(biggest.validate().is_ok());
/// let unaligned = IoEngineConfig { buffer_size: BUFFER_ALIGN + 1, ..Default::default() };
/// assert!(unaligned.validate().is_err());
/// ```
pub const MAX_URING_ENTRIES: u32 = 32768;
/// Most io_uring rings per engine.
pub const MAX_RINGS: u32 = 64;
/// Largest fixed-buffer table the kernel accepts.
pub const MAX_REGISTERED_BUFFERS: u32 = 16384;
/// Largest pool buffer: one registered buffer may not exceed 1 GiB.
pub const MAX_BUFFER_SIZE: usize = 1 << 30;
/// Pool buffers are multiples of this, and aligned to it.
pub const BUFFER_ALIGN: usize = 4096;

impl IoEngineConfig {
    /// The same configuration with another engine choice.
    ///
    /// ```
    /// use ferrite_io::{EngineChoice, IoEngineConfig};
    /// let config = IoEngineConfig::default().with_engine(EngineChoice::Tokio);
    /// assert_eq!(config.engine, EngineChoice::Tokio);
    /// ```
    #[must_use]
    pub fn with_engine(mut self, engine: EngineChoice) -> Self {
        self.engine = engine;
        self
    }

    /// Checks every value against its allowed range.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the first bad key, its value and what is allowed.
    ///
    /// ```
    /// use ferrite_io::IoEngineConfig;
    /// let config = IoEngineConfig { buffer_size: 1000, ..IoEngineConfig::default() };
    /// let error = config.validate().unwrap_err();
    /// assert!(error.to_string().starts_with("invalid config: io.buffer_size = 1000"));
    /// ```
    pub fn validate(&self) -> Result<()> {
        check_uring_entries(self.uring_entries)?;
        check_rings(self.rings)?;
        check_registered_buffers(self.registered_buffers)?;
        check_buffer_size(self.buffer_size)?;
        Ok(())
    }

    /// Parses a TOML document whose only table is `[io]`, checking every value as it is read.
    /// A missing `[io]` table or key takes its default.
    ///
    /// # Errors
    ///
    /// [`Error::ConfigFile`] for a syntax error, an unknown table or key, an unknown engine name
    /// or an out-of-range value; the message names the line and column, the key and the allowed
    /// values.
    ///
    /// ```
    /// use ferrite_io::{EngineChoice, IoEngineConfig};
    /// let config = IoEngineConfig::from_toml_str("[io]\nengine = \"tokio\"\nbuffer_size = 8192\n")?;
    /// assert_eq!((config.engine, config.buffer_size), (EngineChoice::Tokio, 8192));
    /// assert_eq!(config.registered_buffers, IoEngineConfig::default().registered_buffers);
    /// # Ok::<(), ferrite_io::Error>(())
    /// ```
    pub fn from_toml_str(text: &str) -> Result<Self> {
        Self::parse(text, "<string>")
    }

    /// Reads and parses a TOML file, as [`from_toml_str`](Self::from_toml_str); errors name the
    /// file.
    ///
    /// # Errors
    ///
    /// As [`from_toml_str`](Self::from_toml_str), plus [`Error::ConfigFile`] when the file cannot
    /// be read.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("ferrite.toml");
    /// std::fs::write(&path, "[io]\nregistered_buffers = 8\n").unwrap();
    /// let config = ferrite_io::IoEngineConfig::from_toml_file(&path)?;
    /// assert_eq!(config.registered_buffers, 8);
    /// # Ok::<(), ferrite_io::Error>(())
    /// ```
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::ConfigFile { path: path.display().to_string(), message: e.to_string() })?;
        Self::parse(&text, &path.display().to_string())
    }

    fn parse(text: &str, origin: &str) -> Result<Self> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Document {
            #[serde(default)]
            io: IoEngineConfig,
        }
        let doc: Document =
            toml::from_str(text).map_err(|e| Error::ConfigFile { path: origin.to_owned(), message: e.to_string() })?;
        Ok(doc.io)
    }
}

fn check_uring_entries(e: u32) -> Result<u32> {
    if !e.is_power_of_two() || e > MAX_URING_ENTRIES {
        return Err(bad("io.uring_entries", e, "a power of two in 1..=32768"));
    }
    Ok(e)
}

fn check_rings(n: u32) -> Result<u32> {
    if n > MAX_RINGS {
        return Err(bad("io.rings", n, "an integer in 0..=64 (0: one per CPU)"));
    }
    Ok(n)
}

fn check_registered_buffers(n: u32) -> Result<u32> {
    if n == 0 || n > MAX_REGISTERED_BUFFERS {
        return Err(bad("io.registered_buffers", n, "an integer in 1..=16384"));
    }
    Ok(n)
}

fn check_buffer_size(s: usize) -> Result<usize> {
    if s == 0 || s % BUFFER_ALIGN != 0 || s > MAX_BUFFER_SIZE {
        return Err(bad("io.buffer_size", s, "a non-zero multiple of 4096 of at most 1073741824"));
    }
    Ok(s)
}

/// Deserializes a value and checks its range while the parser still knows where it stands, so
/// a range error names the line and column as a syntax error does.
fn checked<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
    check: fn(T) -> Result<T>,
) -> Result<T, D::Error> {
    check(T::deserialize(deserializer)?).map_err(serde::de::Error::custom)
}

fn checked_uring_entries<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    checked(d, check_uring_entries)
}

fn checked_rings<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    checked(d, check_rings)
}

fn checked_registered_buffers<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    checked(d, check_registered_buffers)
}

fn checked_buffer_size<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    checked(d, check_buffer_size)
}

fn bad(key: &'static str, value: impl fmt::Display, expected: &'static str) -> Error {
    Error::Config { key, value: value.to_string(), expected }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_seed() {
        let c = IoEngineConfig::from_toml_str("").unwrap();
        assert_eq!(c, IoEngineConfig::default());
        assert_eq!((c.engine, c.uring_entries, c.registered_buffers), (EngineChoice::Auto, 256, 64));
    }

    #[test]
    fn unknown_tables_and_keys_are_errors() {
        let e = err("[oi]\nengine = \"uring\"\n");
        assert!(e.contains("unknown field `oi`") && e.contains("line 1"), "{e}");
        let e = err("[io]\nengine = \"uring\"\nring_size = 8\n");
        assert!(e.contains("unknown field `ring_size`") && e.contains("line 3"), "{e}");
    }

    #[test]
    fn range_errors_name_the_file_and_line() {
        let path = std::env::temp_dir().join(format!("ferrite-io-config-test-{}.toml", std::process::id()));
        std::fs::write(&path, "[io]\nengine = \"tokio\"\nbuffer_size = 5000\n").unwrap();
        let e = IoEngineConfig::from_toml_file(&path).unwrap_err().to_string();
        let _ = std::fs::remove_file(&path);
        assert!(e.contains(&path.display().to_string()) && e.contains("line 3"), "{e}");
        assert!(e.contains("io.buffer_size = 5000") && e.contains("multiple of 4096"), "{e}");
    }

    fn err(text: &str) -> String {
        IoEngineConfig::from_toml_str(text).unwrap_err().to_string()
    }

    #[test]
    fn bad_values_name_the_key_and_the_allowed_values() {
        let e = err("[io]\nuring_entries = 100\n");
        assert!(e.contains("io.uring_entries = 100") && e.contains("power of two"), "{e}");
        let e = err("[io]\nuring_entries = 65536\n");
        assert!(e.contains("io.uring_entries"), "{e}");
        let e = err("[io]\nrings = 65\n");
        assert!(e.contains("io.rings = 65") && e.contains("line 2"), "{e}");
        let e = err("[io]\nregistered_buffers = 0\n");
        assert!(e.contains("io.registered_buffers = 0"), "{e}");
        let e = err("[io]\nbuffer_size = 5000\n");
        assert!(e.contains("io.buffer_size = 5000") && e.contains("multiple of 4096"), "{e}");
        let e = err("[io]\nengine = \"fast\"\n");
        assert!(e.contains("engine") && e.contains("`auto`, `uring`, `tokio`"), "{e}");
        let e = err("[io]\nring_size = 8\n");
        assert!(e.contains("unknown field `ring_size`") && e.contains("uring_entries"), "{e}");
    }

    #[test]
    fn engine_names_parse() {
        assert_eq!("tokio".parse::<EngineChoice>().unwrap(), EngineChoice::Tokio);
        assert!("io_uring".parse::<EngineChoice>().unwrap_err().to_string().contains("\"uring\""));
    }
}
