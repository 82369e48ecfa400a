//! Reading the binaries' TOML config files with errors a person can act on, shared by
//! `chron-cli router --config` and `chron-bridge out|in --config`.
//!
//! The file is parsed into a [`toml::Table`] and walked by hand rather than deserialized, so
//! that every error names the file and the full dotted key (`router.toml: key
//! `strategies.s1.weight`: expected a positive integer, found 0`), unknown keys are refused with
//! the list of the known ones, and a value of the wrong type says what it was. The caller
//! matches on key names; this module holds the walking, the typed getters and the messages.
//!
//! ```
//! use chronicle_metrics::config::Doc;
//! let doc = Doc::parse("b.toml", "[out]\nwindow = 0\n").unwrap();
//! let mut window = 256;
//! let r = (|| {
//!     for sec in doc.root().entries() {
//!         match sec.name() {
//!             "out" => {
//!                 for k in sec.table()?.entries() {
//!                     match k.name() {
//!                         "window" => window = k.uint_in::<usize>(1, 4096)?,
//!                         _ => return Err(k.unknown("window")),
//!                     }
//!                 }
//!             }
//!             _ => return Err(sec.unknown("the section out")),
//!         }
//!     }
//!     Ok(())
//! })();
//! assert_eq!(
//!     r.unwrap_err().to_string(),
//!     "b.toml: key `out.window`: expected an integer from 1 to 4096, found 0 (integer)"
//! );
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

use toml::Table;
/// The TOML value type the getters read ([`Key::value`]), re-exported for matching on it.
pub use toml::Value;

/// Why a config file was refused. Its `Display` is one sentence naming the file (and the key).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    Read {
        /// What the file is, e.g. "router config".
        what: String,
        file: String,
        error: String,
        /// What to do about it.
        hint: &'static str,
    },
    /// The file is not valid TOML.
    Syntax { file: String, message: String },
    /// A key is unknown, missing, or its value is not what it must be.
    Key {
        file: String,
        /// The full dotted key, e.g. `strategies.s1.weight`.
        key: String,
        problem: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read {
                what,
                file,
                error,
                hint,
            } => write!(f, "cannot read the {what} {file}: {error} ({hint})"),
            ConfigError::Syntax { file, message } => write!(f, "{file}: not valid TOML: {message}"),
            ConfigError::Key { file, key, problem } => write!(f, "{file}: key `{key}`: {problem}"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// A parsed config file: its name (as the messages show it) and its top-level table.
#[derive(Debug, Clone)]
pub struct Doc {
    file: String,
    table: Table,
}

impl Doc {
    /// Reads and parses `path`; `what` names the file in a read error ("router config").
    pub fn read(path: &Path, what: &str) -> Result<Doc, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            what: what.to_string(),
            file: file.clone(),
            error: e.to_string(),
            hint: match e.kind() {
                std::io::ErrorKind::NotFound => "check the path given to --config",
                std::io::ErrorKind::PermissionDenied => "run as a user who may read it",
                _ => "check that it is a readable text file",
            },
        })?;
        Doc::parse(&file, &text)
    }

    /// Parses a config's text; `file` goes into the messages.
    pub fn parse(file: &str, text: &str) -> Result<Doc, ConfigError> {
        let table: Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Syntax {
                file: file.to_string(),
                message: e.to_string().trim().replace('\n', " "),
            })?;
        Ok(Doc {
            file: file.to_string(),
            table,
        })
    }

    /// The file's name as the messages show it.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// The top-level table.
    pub fn root(&self) -> Section<'_> {
        Section {
            file: &self.file,
            path: String::new(),
            table: &self.table,
        }
    }

    /// An error about `key` (a full dotted key) of this file, e.g. a missing one.
    pub fn error(&self, key: &str, problem: impl Into<String>) -> ConfigError {
        ConfigError::Key {
            file: self.file.clone(),
            key: key.to_string(),
            problem: problem.into(),
        }
    }
}

/// A table of the file, at a dotted path (empty: the top level).
#[derive(Debug, Clone)]
pub struct Section<'a> {
    file: &'a str,
    path: String,
    table: &'a Table,
}

impl<'a> Section<'a> {
    /// The table's keys, in the file's order.
    pub fn entries(&self) -> impl Iterator<Item = Key<'a>> + '_ {
        self.table.iter().map(|(name, value)| Key {
            file: self.file,
            path: if self.path.is_empty() {
                toml_key(name)
            } else {
                format!("{}.{}", self.path, toml_key(name))
            },
            name,
            value,
        })
    }

    /// The full dotted key of this table.
    pub fn path(&self) -> &str {
        &self.path
    }
}

/// One key of the file with its value; the getters check the value's type and range and name
/// the full key when it is wrong.
#[derive(Debug, Clone)]
pub struct Key<'a> {
    file: &'a str,
    path: String,
    name: &'a str,
    value: &'a Value,
}

impl<'a> Key<'a> {
    /// The key's own name (its last part, unquoted).
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// The full dotted key, quoted where TOML needs it.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The raw value.
    pub fn value(&self) -> &'a Value {
        self.value
    }

    /// An error about this key.
    pub fn error(&self, problem: impl Into<String>) -> ConfigError {
        ConfigError::Key {
            file: self.file.to_string(),
            key: self.path.clone(),
            problem: problem.into(),
        }
    }

    /// "expected {what}, found {the value}".
    pub fn expected(&self, what: &str) -> ConfigError {
        self.error(format!("expected {what}, found {}", shown(self.value)))
    }

    /// The key is not one this table may hold; `known` lists the ones it may.
    pub fn unknown(&self, known: &str) -> ConfigError {
        self.error(format!("unknown key (known here: {known})"))
    }

    /// The value as a table (a `[name]` section).
    pub fn table(&self) -> Result<Section<'a>, ConfigError> {
        self.table_named(self.name)
    }

    /// The value as a table; `what` goes into the message (`[what] section`).
    pub fn table_named(&self, what: &str) -> Result<Section<'a>, ConfigError> {
        match self.value.as_table() {
            Some(table) => Ok(Section {
                file: self.file,
                path: self.path.clone(),
                table,
            }),
            None => Err(self.expected(&format!("a table ([{what}] section)"))),
        }
    }

    /// An integer at least `min` ("a non-negative integer" for 0, "a positive integer" above).
    pub fn uint(&self, min: u64) -> Result<u64, ConfigError> {
        let what = if min == 0 {
            "a non-negative integer"
        } else {
            "a positive integer"
        };
        match self.value.as_integer() {
            Some(n) => match u64::try_from(n) {
                Ok(n) if n >= min => Ok(n),
                _ => Err(self.error(format!("expected {what}, found {n}"))),
            },
            None => Err(self.expected(what)),
        }
    }

    /// An integer from `min` to `max`, converted to `T`.
    pub fn uint_in<T: TryFrom<u64>>(&self, min: u64, max: u64) -> Result<T, ConfigError> {
        let what = format!("an integer from {min} to {max}");
        match self.value.as_integer().map(u64::try_from) {
            Some(Ok(n)) if (min..=max).contains(&n) => {
                T::try_from(n).map_err(|_| self.error(format!("too large: {n}")))
            }
            _ => Err(self.expected(&what)),
        }
    }

    /// An integer at least `min`, as a `usize`.
    pub fn usize(&self, min: u64) -> Result<usize, ConfigError> {
        let n = self.uint(min)?;
        usize::try_from(n).map_err(|_| self.error("too large"))
    }

    /// A signed integer at least `min`.
    pub fn int(&self, min: i64) -> Result<i64, ConfigError> {
        match self.value.as_integer() {
            Some(n) if n >= min => Ok(n),
            _ => Err(self.expected(&format!("an integer of at least {min}"))),
        }
    }

    /// A non-negative number of seconds (integer or float).
    pub fn seconds(&self) -> Result<f64, ConfigError> {
        #[allow(clippy::cast_precision_loss)] // seconds: far below 2^52
        let v = match self.value {
            Value::Integer(n) => Some(*n as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        };
        match v {
            Some(s) if s.is_finite() && s >= 0.0 => Ok(s),
            _ => Err(self.expected("a non-negative number of seconds")),
        }
    }

    /// `true` or `false`.
    pub fn bool(&self) -> Result<bool, ConfigError> {
        self.value
            .as_bool()
            .ok_or_else(|| self.expected("true or false"))
    }

    /// A non-empty string.
    pub fn string(&self) -> Result<String, ConfigError> {
        match self.value.as_str() {
            Some(s) if !s.is_empty() => Ok(s.to_string()),
            _ => Err(self.expected("a non-empty string")),
        }
    }

    /// A file path (a non-empty string).
    pub fn path_buf(&self) -> Result<PathBuf, ConfigError> {
        match self.value.as_str() {
            Some(s) if !s.is_empty() => Ok(PathBuf::from(s)),
            _ => Err(self.expected("a file path (a string)")),
        }
    }

    /// A listen address, `"HOST:PORT"`.
    pub fn address(&self) -> Result<String, ConfigError> {
        match self.value.as_str() {
            Some(a) if a.contains(':') => Ok(a.to_string()),
            _ => Err(self.expected("an address \"HOST:PORT\"")),
        }
    }

    /// One of `choices` (strings).
    pub fn choice(&self, choices: &[&'static str]) -> Result<&'static str, ConfigError> {
        let found = self
            .value
            .as_str()
            .and_then(|s| choices.iter().copied().find(|c| *c == s));
        found.ok_or_else(|| self.expected(&one_of(choices)))
    }
}

/// `"a" or "b"`, `"a", "b" or "c"`.
fn one_of(choices: &[&str]) -> String {
    let quoted: Vec<String> = choices.iter().map(|c| format!("{c:?}")).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        Some((last, _)) => last.clone(),
        None => "nothing".to_string(),
    }
}

/// A value as the messages show it: its TOML text and type.
pub fn shown(v: &Value) -> String {
    match v {
        Value::Table(_) => "a table".to_string(),
        Value::Array(_) => "an array".to_string(),
        other => format!("{other} ({})", other.type_str()),
    }
}

/// A bare TOML key when it is one, else quoted.
pub fn toml_key(k: &str) -> String {
    if !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        k.to_string()
    } else {
        Value::from(k).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first(text: &str) -> (Doc, String) {
        let doc = Doc::parse("c.toml", text).unwrap();
        let name = doc.root().entries().next().unwrap().name().to_string();
        (doc, name)
    }

    fn key_err(text: &str, f: impl Fn(&Key<'_>) -> Result<(), ConfigError>) -> String {
        let (doc, _) = first(text);
        let sec = doc.root().entries().next().unwrap();
        let k = sec.table().unwrap().entries().next().unwrap();
        f(&k).unwrap_err().to_string()
    }

    #[test]
    fn messages_name_the_file_and_the_full_key() {
        assert_eq!(
            key_err("[a]\nb = 0", |k| k.uint(1).map(drop)),
            "c.toml: key `a.b`: expected a positive integer, found 0"
        );
        assert_eq!(
            key_err("[a]\nb = 1.5", |k| k.uint(0).map(drop)),
            "c.toml: key `a.b`: expected a non-negative integer, found 1.5 (float)"
        );
        assert_eq!(
            key_err("[a]\nb = 5000", |k| k.uint_in::<u16>(1, 4096).map(drop)),
            "c.toml: key `a.b`: expected an integer from 1 to 4096, found 5000 (integer)"
        );
        assert_eq!(
            key_err("[a]\nb = \"x\"", |k| k.choice(&["p", "q", "r"]).map(drop)),
            "c.toml: key `a.b`: expected \"p\", \"q\" or \"r\", found \"x\" (string)"
        );
        assert_eq!(
            key_err("[a]\nb = -1", |k| k.seconds().map(drop)),
            "c.toml: key `a.b`: expected a non-negative number of seconds, found -1 (integer)"
        );
        assert_eq!(
            key_err("[a]\nb = \"yes\"", |k| k.bool().map(drop)),
            "c.toml: key `a.b`: expected true or false, found \"yes\" (string)"
        );
        assert_eq!(
            key_err("[a]\n\"odd key\" = 1", |k| Err(k.unknown("b"))),
            "c.toml: key `a.\"odd key\"`: unknown key (known here: b)"
        );
        assert_eq!(
            key_err("[a.b]\nc = 1", |k| k.address().map(drop)),
            "c.toml: key `a.b`: expected an address \"HOST:PORT\", found a table"
        );
        let (doc, _) = first("a = 5");
        let e = doc.root().entries().next().unwrap().table().unwrap_err();
        assert_eq!(
            e.to_string(),
            "c.toml: key `a`: expected a table ([a] section), found 5 (integer)"
        );
        assert!(
            Doc::parse("c.toml", "[a\n")
                .unwrap_err()
                .to_string()
                .starts_with("c.toml: not valid TOML: ")
        );
        let e = Doc::read(Path::new("/nonexistent/x.toml"), "bridge config").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot read the bridge config /nonexistent/x.toml: "),
            "{e}"
        );
        assert!(
            e.to_string()
                .ends_with("(check the path given to --config)")
        );
    }

    #[test]
    fn good_values_read_back() {
        let doc = Doc::parse(
            "c.toml",
            "[a]\nn = 7\ns = 2.5\nt = true\np = \"/x\"\nl = \"h:1\"\nc = \"q\"\ni = -1",
        )
        .unwrap();
        let sec = doc.root().entries().next().unwrap().table().unwrap();
        for k in sec.entries() {
            match k.name() {
                "n" => {
                    assert_eq!(k.uint(7).unwrap(), 7);
                    assert_eq!(k.uint_in::<u8>(1, 8).unwrap(), 7);
                    assert_eq!(k.usize(1).unwrap(), 7);
                    assert_eq!(k.seconds().unwrap(), 7.0);
                }
                "s" => assert_eq!(k.seconds().unwrap(), 2.5),
                "t" => assert!(k.bool().unwrap()),
                "p" => assert_eq!(k.path_buf().unwrap(), PathBuf::from("/x")),
                "l" => assert_eq!(k.address().unwrap(), "h:1"),
                "c" => assert_eq!(k.choice(&["p", "q"]).unwrap(), "q"),
                "i" => assert_eq!(k.int(-1).unwrap(), -1),
                _ => unreachable!(),
            }
            assert_eq!(k.path(), format!("a.{}", k.name()));
        }
    }
}
