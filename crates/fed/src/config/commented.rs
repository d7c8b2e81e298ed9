//! A configuration as TOML for people (`wflora default-config`): a comment
//! above every key and section, floats in their shortest readable form
//! (`1e-28`, `3e-4`, `0.25`, `2e7`), scalar keys before the tables they sit
//! in. What it writes reads back to the same configuration.

use toml::{Table, Value};

/// `table` as TOML: the lines of `header` as comments first, then every key
/// with the comment `doc(path)` gives for its dotted path (`wireless.channel.kappa`;
/// the elements of an array of tables share their array's path) above it.
#[must_use]
pub fn write(table: &Table, header: &str, doc: &dyn Fn(&str) -> Option<&'static str>) -> String {
    let mut out = String::new();
    for line in header.lines() {
        out.push_str(&comment(line));
    }
    if !header.is_empty() {
        out.push('\n');
    }
    let mut path = Vec::new();
    write_table(&mut out, table, &mut path, doc, Header::Root, Vec::new());
    out
}

/// How a table's own header line is written.
#[derive(Clone, Copy)]
enum Header {
    /// The document: no header.
    Root,
    /// `[path]`.
    Table,
    /// `[[path]]`, an element of an array of tables.
    ArrayElement,
}

fn comment(line: &str) -> String {
    if line.is_empty() {
        "#\n".into()
    } else {
        format!("# {line}\n")
    }
}

/// Whether `v` is written as a section (`[…]` or `[[…]]`) rather than inline.
fn is_section(v: &Value) -> bool {
    match v {
        Value::Table(_) => true,
        Value::Array(a) => !a.is_empty() && a.iter().all(Value::is_table),
        _ => false,
    }
}

fn write_table(
    out: &mut String,
    table: &Table,
    path: &mut Vec<String>,
    doc: &dyn Fn(&str) -> Option<&'static str>,
    header: Header,
    mut pending: Vec<&'static str>,
) {
    let dotted = path.join(".");
    let has_plain = table.values().any(|v| !is_section(v));
    pending.extend(doc(&dotted));
    match header {
        Header::Root => pending.clear(),
        // A table of tables only needs no header of its own: its comment
        // goes above its first section.
        Header::Table if !has_plain && !table.is_empty() => {}
        Header::Table | Header::ArrayElement => {
            out.push('\n');
            for d in pending.drain(..) {
                out.push_str(&comment(d));
            }
            let name = header_name(path);
            match header {
                Header::ArrayElement => out.push_str(&format!("[[{name}]]\n")),
                _ => out.push_str(&format!("[{name}]\n")),
            }
        }
    }
    for (k, v) in table.iter().filter(|(_, v)| !is_section(v)) {
        path.push(k.clone());
        if let Some(d) = doc(&path.join(".")) {
            out.push_str(&comment(d));
        }
        path.pop();
        out.push_str(&format!("{} = {}\n", key(k), value(v)));
    }
    for (k, v) in table.iter().filter(|(_, v)| is_section(v)) {
        path.push(k.clone());
        match v {
            Value::Table(t) => {
                write_table(
                    out,
                    t,
                    path,
                    doc,
                    Header::Table,
                    std::mem::take(&mut pending),
                );
            }
            Value::Array(a) => {
                for t in a.iter().filter_map(Value::as_table) {
                    let first = std::mem::take(&mut pending);
                    write_table(out, t, path, doc, Header::ArrayElement, first);
                }
            }
            _ => {}
        }
        path.pop();
    }
}

fn header_name(path: &[String]) -> String {
    path.iter().map(|k| key(k)).collect::<Vec<_>>().join(".")
}

/// A key, bare where TOML allows it.
fn key(k: &str) -> String {
    if !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        k.to_owned()
    } else {
        Value::String(k.to_owned()).to_string()
    }
}

/// A value, inline.
fn value(v: &Value) -> String {
    match v {
        Value::Float(x) => float(*x),
        Value::Array(a) => format!("[{}]", a.iter().map(value).collect::<Vec<_>>().join(", ")),
        Value::Table(t) if t.is_empty() => "{}".into(),
        Value::Table(t) => format!(
            "{{ {} }}",
            t.iter()
                .map(|(k, v)| format!("{} = {}", key(k), value(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => other.to_string(),
    }
}

/// `x` in its shortest readable TOML form: plain decimals from `1e-3` up to
/// `1e6` (`0.25`, `16.0`, `-174.0`), exponent notation beyond (`3e-4`,
/// `1e-28`, `2e7`). Both are the shortest digits that read back to `x`.
#[must_use]
pub fn float(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.into();
    }
    let a = x.abs();
    if a == 0.0 || (1e-3..1e6).contains(&a) {
        format!("{x:?}")
    } else {
        format!("{x:e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_are_short_and_read_back() {
        for (x, s) in [
            (1e-28, "1e-28"),
            (3e-4, "3e-4"),
            (0.25, "0.25"),
            (2e-3, "0.002"),
            (16.0, "16.0"),
            (-174.0, "-174.0"),
            (2e7, "2e7"),
            (1e-8, "1e-8"),
            (1.5e9, "1.5e9"),
            (0.0, "0.0"),
        ] {
            assert_eq!(float(x), s);
            let back: Table = format!("x = {s}").parse().unwrap();
            assert_eq!(back["x"].as_float(), Some(x), "{s}");
        }
    }

    #[test]
    fn sections_comments_and_arrays_of_tables_read_back() {
        let text = r#"
name = "n"
list = [1, 2]
[a]
x = 0.5
[a.b.c]
y = "z"
[[t]]
k = 1
[t.sub]
q = 2
[[t]]
k = 2
"#;
        let table: Table = text.parse().unwrap();
        let docs = |p: &str| match p {
            "a" => Some("the a table"),
            "a.x" => Some("x of a"),
            "a.b" => Some("b holds tables only"),
            "t" => Some("an array of tables"),
            _ => None,
        };
        let out = write(&table, "head\n\nline", &docs);
        assert!(out.starts_with("# head\n#\n# line\n\n"), "{out}");
        assert!(
            out.contains("# the a table\n[a]\n# x of a\nx = 0.5\n"),
            "{out}"
        );
        assert!(out.contains("\n# b holds tables only\n[a.b.c]"), "{out}");
        assert!(out.contains("# an array of tables\n[[t]]"), "{out}");
        let back: Table = out.parse().unwrap();
        assert_eq!(back, table, "{out}");
    }
}
