//! Layered configurations: a base, the file that names it, and `--set`
//! overrides, merged key by key and read strictly.
//!
//! A configuration file gives only the keys it changes. Its top-level
//! `base` names what it starts from: `"default"` (the embedded default, also
//! when `base` is absent) or the path of another configuration file,
//! relative to the file that names it (which may name its own base). On top
//! come `--set section.key=value` overrides, whose values are TOML (`3e-4`,
//! `20`, `true`, `[1, 2]`, `{ kind = "iid" }`; a bare word is a string).
//!
//! The layers are merged by [`figment`] (a table merges into the table
//! below it key by key; any other value, arrays included, replaces it) and
//! the result is read through the configuration's own `Deserialize`, so the
//! [`strict`](super::strict) checks hold for the merged configuration as
//! for a complete file: an unknown key or a table given as an array is an
//! error naming the key path and the layer (the file, or the `--set`) it
//! came from. One rule is ours: a layer that switches a tagged table to
//! another `kind` (`[wireless.allocation] kind = "myopic"` over
//! `equalising`), or an optimiser table to another optimiser (`sgd` over
//! `adam_w`), replaces that table of the layers below instead of merging
//! into it, so that the old kind's keys do not linger.

use crate::FedError;
use figment::value::{Dict, Map};
use figment::{Figment, Metadata, Profile, Provider};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use toml::{Table, Value};

/// The top-level key of a configuration file that names its base.
pub const BASE_KEY: &str = "base";

/// The value of [`BASE_KEY`] that names the embedded default.
pub const DEFAULT_BASE: &str = "default";

/// How many files a chain of bases may hold.
const MAX_CHAIN: usize = 16;

/// The names of the one-of tables' entries (an optimiser table holds exactly
/// one of them): a layer naming one drops the others of the layers below.
const ONE_OF: &[&str] = super::strict::OPTIMIZERS;

/// One `--set KEY=VALUE`: a dotted key path and a TOML value.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    path: Vec<String>,
    value: Value,
    text: String,
}

impl Override {
    /// The override of `key` (dotted: `federation.clients`) by `value`.
    ///
    /// # Errors
    /// An empty key or key segment, or a segment with characters other than
    /// letters, digits, `_` and `-`.
    pub fn new(key: &str, value: Value) -> Result<Self, String> {
        let path: Vec<String> = key.split('.').map(str::to_owned).collect();
        if let Some(bad) = path.iter().find(|s| {
            s.is_empty()
                || !s
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        }) {
            return Err(format!(
                "`{key}` is not a key path like `federation.clients` (segment `{bad}`)"
            ));
        }
        let text = format!("{key}={value}");
        Ok(Self { path, value, text })
    }

    /// The dotted key path.
    #[must_use]
    pub fn key(&self) -> String {
        self.path.join(".")
    }

    /// The value.
    #[must_use]
    pub fn value(&self) -> &Value {
        &self.value
    }

    /// The override as a table nested along its key path.
    fn table(&self) -> Table {
        let mut value = self.value.clone();
        for seg in self.path.iter().skip(1).rev() {
            let mut t = Table::new();
            t.insert(seg.clone(), value);
            value = Value::Table(t);
        }
        let mut top = Table::new();
        top.insert(self.path[0].clone(), value);
        top
    }
}

impl fmt::Display for Override {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// `KEY=VALUE`: the value is read as TOML (`3e-4`, `20`, `true`, `"x"`,
/// `[1, 2]`, `{ kind = "iid" }`); one that is not TOML and does not start
/// like a quoted string, an array or a table is taken as a string, so that
/// `compression.method=slora` needs no quotes.
impl FromStr for Override {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (key, raw) = s.split_once('=').ok_or_else(|| {
            format!("`{s}` is not KEY=VALUE (e.g. `federation.clients=20`, `local.optimizer.adam_w.lr=3e-4`)")
        })?;
        let (key, raw) = (key.trim(), raw.trim());
        let value = match format!("v = {raw}").parse::<Table>() {
            Ok(mut t) => t.remove("v").ok_or_else(|| format!("`{s}`: no value"))?,
            Err(_) if !raw.is_empty() && !raw.starts_with(['"', '\'', '[', '{']) => {
                Value::String(raw.to_owned())
            }
            Err(e) => {
                return Err(format!(
                    "`{s}`: the value is not TOML: {}",
                    e.message().trim()
                ));
            }
        };
        let mut o = Self::new(key, value)?;
        o.text = s.to_owned();
        Ok(o)
    }
}

/// One layer of a configuration: where it came from (for errors), its
/// level (a file over its base, `--set` over the file; every `--set` is one
/// level) and its keys.
#[derive(Debug, Clone)]
struct Layer {
    origin: String,
    level: usize,
    table: Table,
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.origin.clone())
    }
    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        figment::providers::Serialized::defaults(&self.table).data()
    }
}

/// `cfg` as a TOML table (the bottom layer).
fn to_table<T: Serialize>(cfg: &T, origin: &str) -> Result<Table, FedError> {
    Table::try_from(cfg).map_err(|e| FedError::ConfigSource {
        origin: origin.to_owned(),
        reason: format!("cannot be written as TOML: {e}"),
    })
}

/// How a file is named in messages.
#[must_use]
pub fn file_origin(file: &Path) -> String {
    format!("file {}", file.display())
}

/// The configuration in the file `file` over its base, with `overrides`
/// on top; `default` is the embedded default (`base = "default"`, or no
/// `base`).
///
/// # Errors
/// [`FedError::ConfigSource`]: the file (or a base it names) cannot be
/// read, is not TOML, or a key is unknown or of the wrong type (the key path
/// and the file or the `--set` named); the error names the file it was
/// read from.
pub fn load<T: Serialize + DeserializeOwned>(
    default: &T,
    file: &Path,
    overrides: &[Override],
) -> Result<T, FedError> {
    let text = read(file)?;
    from_text(default, &text, file, overrides)
}

/// As [`load`] with the file's text already read (`file` names it and
/// anchors a relative `base`).
///
/// # Errors
/// As [`load`].
pub fn from_text<T: Serialize + DeserializeOwned>(
    default: &T,
    text: &str,
    file: &Path,
    overrides: &[Override],
) -> Result<T, FedError> {
    let mut layers = Vec::new();
    let mut chain = Vec::new();
    file_layers(default, text, file, &mut chain, &mut layers)?;
    let levels = layers.len();
    push_overrides(&mut layers, overrides, levels);
    extract(layers, &file_origin(file))
}

/// `base` (a configuration built in code; `origin` names it in messages)
/// with `overrides` on top.
///
/// # Errors
/// As [`load`], naming the `--set`.
pub fn apply<T: Serialize + DeserializeOwned>(
    base: &T,
    origin: &str,
    overrides: &[Override],
) -> Result<T, FedError> {
    let mut layers = vec![Layer {
        origin: origin.to_owned(),
        level: 0,
        table: to_table(base, origin)?,
    }];
    push_overrides(&mut layers, overrides, 1);
    extract(layers, origin)
}

fn push_overrides(layers: &mut Vec<Layer>, overrides: &[Override], level: usize) {
    layers.extend(overrides.iter().map(|o| Layer {
        origin: format!("--set {o}"),
        level,
        table: o.table(),
    }));
}

fn read(file: &Path) -> Result<String, FedError> {
    std::fs::read_to_string(file).map_err(|e| FedError::ConfigSource {
        origin: file_origin(file),
        reason: format!("cannot read it: {e}"),
    })
}

/// The layers of `file` (text `text`): its base's first, then its own.
fn file_layers<T: Serialize>(
    default: &T,
    text: &str,
    file: &Path,
    chain: &mut Vec<PathBuf>,
    layers: &mut Vec<Layer>,
) -> Result<(), FedError> {
    let origin = file_origin(file);
    let bad = |reason: String| FedError::ConfigSource {
        origin: origin.clone(),
        reason,
    };
    let mut table: Table = text
        .parse()
        .map_err(|e: toml::de::Error| bad(format!("not valid TOML: {e}")))?;
    chain.push(std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf()));
    match table.remove(BASE_KEY) {
        None => layers.push(default_layer(default)?),
        Some(Value::String(name)) if name == DEFAULT_BASE => layers.push(default_layer(default)?),
        Some(Value::String(name)) => {
            let path = file.parent().unwrap_or(Path::new("")).join(&name);
            let canonical = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
            if chain.contains(&canonical) {
                return Err(bad(format!(
                    "key `{BASE_KEY}`: {} is already in the chain of bases (a cycle)",
                    path.display()
                )));
            }
            if chain.len() >= MAX_CHAIN {
                return Err(bad(format!(
                    "key `{BASE_KEY}`: more than {MAX_CHAIN} files in the chain of bases"
                )));
            }
            let text = std::fs::read_to_string(&path).map_err(|e| {
                bad(format!(
                    "key `{BASE_KEY}`: cannot read the base {}: {e}",
                    path.display()
                ))
            })?;
            file_layers(default, &text, &path, chain, layers)?;
        }
        Some(other) => {
            return Err(bad(format!(
                "key `{BASE_KEY}`: expected a string (\"{DEFAULT_BASE}\" or the path of a \
                 configuration file, relative to this one), found {}",
                other.type_str()
            )));
        }
    }
    let level = layers.last().map_or(0, |l| l.level + 1);
    layers.push(Layer {
        origin,
        level,
        table,
    });
    Ok(())
}

fn default_layer<T: Serialize>(default: &T) -> Result<Layer, FedError> {
    let origin = "the embedded default".to_owned();
    Ok(Layer {
        table: to_table(default, &origin)?,
        origin,
        level: 0,
    })
}

/// Merges the layers (after [`prune_switches`]) and reads a `T`.
fn extract<T: DeserializeOwned>(mut layers: Vec<Layer>, fallback: &str) -> Result<T, FedError> {
    prune_switches(&mut layers);
    let figment = layers
        .into_iter()
        .fold(Figment::new(), |f, layer| f.merge(layer));
    figment.extract().map_err(|e| describe(&e, fallback))
}

/// A figment error as ours: the layer it came from, the key path, what was
/// expected.
fn describe(e: &figment::Error, fallback: &str) -> FedError {
    use figment::error::Kind;
    let origin = e
        .metadata
        .as_ref()
        .map_or_else(|| fallback.to_owned(), |m| m.name.to_string());
    let what = match &e.kind {
        Kind::Message(m) => m.clone(),
        Kind::InvalidType(found, expected) | Kind::InvalidValue(found, expected) => {
            format!("expected {expected}, found {found}")
        }
        // The key is the last of the path, except inside a tagged table
        // (read from a buffer, without the path below the table).
        Kind::UnknownField(found, expected) if e.path.last() == Some(found) => {
            format!("unknown key; expected {}", one_of(expected))
        }
        Kind::UnknownField(found, expected) => {
            format!("unknown key `{found}`; expected {}", one_of(expected))
        }
        Kind::UnknownVariant(found, expected) => {
            format!("unknown variant `{found}`; expected {}", one_of(expected))
        }
        Kind::MissingField(key) => format!("missing key `{key}`"),
        other => other.to_string(),
    };
    let reason = if e.path.is_empty() {
        what
    } else {
        format!("key `{}`: {what}", e.path.join("."))
    };
    FedError::ConfigSource { origin, reason }
}

fn one_of(names: &[&str]) -> String {
    match names {
        [] => "none".into(),
        [one] => format!("`{one}`"),
        _ => format!(
            "one of {}",
            names
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The table at `path` of `t`, if there is one.
fn table_at<'a>(t: &'a Table, path: &[String]) -> Option<&'a Table> {
    path.iter()
        .try_fold(t, |t, k| t.get(k).and_then(Value::as_table))
}

/// Removes `path` from `t` (nothing if it is not there).
fn remove_at(t: &mut Table, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut t = t;
    for k in parents {
        match t.get_mut(k).and_then(Value::as_table_mut) {
            Some(child) => t = child,
            None => return,
        }
    }
    t.remove(last);
}

/// The table at `path` of `t`, mutably, if there is one.
fn table_at_mut<'a>(t: &'a mut Table, path: &[String]) -> Option<&'a mut Table> {
    path.iter()
        .try_fold(t, |t, k| t.get_mut(k).and_then(Value::as_table_mut))
}

/// `src` merged into `dst` (tables key by key, anything else replaced).
fn merge_into(dst: &mut Table, src: &Table) {
    for (k, v) in src {
        match (dst.get_mut(k), v) {
            (Some(Value::Table(d)), Value::Table(s)) => merge_into(d, s),
            _ => {
                dst.insert(k.clone(), v.clone());
            }
        }
    }
}

/// Our one merge rule over figment's (see the module): where a level
/// switches a tagged table's `kind`, or an optimiser table's optimiser,
/// the levels below lose that table (or the other optimisers).
fn prune_switches(layers: &mut [Layer]) {
    let top = layers.iter().map(|l| l.level).max().unwrap_or(0);
    for level in 1..=top {
        let mut upper = Table::new();
        for l in layers.iter().filter(|l| l.level == level) {
            merge_into(&mut upper, &l.table);
        }
        let mut path = Vec::new();
        prune_below(layers, level, &upper, &mut path);
    }
}

fn prune_below(layers: &mut [Layer], level: usize, upper: &Table, path: &mut Vec<String>) {
    if let Some(Value::String(kind)) = upper.get("kind") {
        let below = layers
            .iter()
            .rev()
            .filter(|l| l.level < level)
            .find_map(|l| table_at(&l.table, path).and_then(|t| t.get("kind")));
        if below.is_some_and(|k| k.as_str() != Some(kind)) {
            for l in layers.iter_mut().filter(|l| l.level < level) {
                remove_at(&mut l.table, path);
            }
            return;
        }
    }
    // An optimiser table names its optimiser by its one key; any other key
    // (a typo) stays, for the reader to name as unknown.
    let names_one_of = |t: &Table| t.keys().any(|k| ONE_OF.contains(&k.as_str()));
    if names_one_of(upper) {
        for l in layers.iter_mut().filter(|l| l.level < level) {
            if let Some(t) = table_at_mut(&mut l.table, path)
                && names_one_of(t)
            {
                t.retain(|k, _| upper.contains_key(k) || !ONE_OF.contains(&k));
            }
        }
    }
    for (k, v) in upper {
        if let Value::Table(child) = v {
            path.push(k.clone());
            prune_below(layers, level, child, path);
            path.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_read_toml_values_and_bare_words_as_strings() {
        let o: Override = "a.b=3e-4".parse().unwrap();
        assert_eq!(o.key(), "a.b");
        assert_eq!(o.value(), &Value::Float(3e-4));
        let o: Override = "a=20".parse().unwrap();
        assert_eq!(o.value(), &Value::Integer(20));
        let o: Override = "a=true".parse().unwrap();
        assert_eq!(o.value(), &Value::Boolean(true));
        let o: Override = "a=slora".parse().unwrap();
        assert_eq!(o.value(), &Value::String("slora".into()));
        let o: Override = "a=\"x y\"".parse().unwrap();
        assert_eq!(o.value(), &Value::String("x y".into()));
        let o: Override = "a=[1, 2]".parse().unwrap();
        assert_eq!(o.value().as_array().unwrap().len(), 2);
        let o: Override = "a={ kind = \"iid\" }".parse().unwrap();
        assert!(o.value().is_table());
        assert_eq!(o.to_string(), "a={ kind = \"iid\" }");
        for bad in ["a", "=3", "a..b=3", "a=[1,", "a b=3"] {
            assert!(bad.parse::<Override>().is_err(), "{bad}");
        }
    }

    #[test]
    fn an_override_nests_along_its_path() {
        let o: Override = "a.b.c=1".parse().unwrap();
        let t = o.table();
        assert_eq!(t["a"]["b"]["c"].as_integer(), Some(1));
    }
}
