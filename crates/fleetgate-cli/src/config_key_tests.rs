//! Every config key a message or the `init` template names is a real key of the config.

use fleetgate_core::config::key_paths;
use std::path::{Path, PathBuf};

/// Dotted words in messages that are not config keys (file and host names).
const NOT_KEYS: &[&str] = &["fleet.db", "fleet.example.com", "state.lock"];

/// Known wrong key names, as (file, key): none left; add one only with an issue to fix it.
const KNOWN_WRONG: &[(&str, &str)] = &[];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The string literals of `src` up to its first `#[cfg(test)]` (tests name bad keys on
/// purpose). Escapes are kept as written; raw strings are read as plain ones.
fn literals(src: &str) -> Vec<String> {
    let code = src.split("#[cfg(test)]").next().unwrap_or_default();
    let mut out = Vec::new();
    let mut chars = code.chars().peekable();
    let mut in_comment = false;
    let mut prev = '\0';
    while let Some(c) = chars.next() {
        if in_comment {
            if c == '\n' {
                in_comment = false;
            }
        } else if c == '/' && chars.peek() == Some(&'/') {
            in_comment = true;
        } else if c == '\'' && prev != '\\' {
            // A char literal such as '"': skip it whole.
            let rest: String = chars.clone().take(3).collect();
            if rest.starts_with("\"'") {
                chars.next();
                chars.next();
            }
        } else if c == 'r'
            && !prev.is_ascii_alphanumeric()
            && prev != '_'
            && matches!(chars.peek(), Some('#' | '"'))
        {
            // A raw string r"…" / r#"…"#: read to the matching close.
            let mut hashes = 0;
            while chars.peek() == Some(&'#') {
                chars.next();
                hashes += 1;
            }
            if chars.peek() != Some(&'"') {
                prev = '#';
                continue;
            }
            chars.next();
            let close = format!("\"{}", "#".repeat(hashes));
            let mut lit = String::new();
            for d in chars.by_ref() {
                lit.push(d);
                if lit.ends_with(&close) {
                    lit.truncate(lit.len() - close.len());
                    break;
                }
            }
            out.push(lit);
            prev = '"';
            continue;
        } else if c == '"' {
            let mut lit = String::new();
            let mut escaped = false;
            for d in chars.by_ref() {
                if escaped {
                    escaped = false;
                } else if d == '\\' {
                    escaped = true;
                } else if d == '"' {
                    break;
                }
                lit.push(d);
            }
            out.push(lit);
        }
        prev = c;
    }
    out
}

/// Dotted names in `text` whose first part is a config section (`canary.pct`).
fn key_mentions(text: &str, sections: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let is_word = |b: u8| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit();
    let mut i = 0;
    while i < bytes.len() {
        if !is_word(bytes[i]) || (i > 0 && (is_word(bytes[i - 1]) || bytes[i - 1] == b'.')) {
            i += 1;
            continue;
        }
        let mut j = i;
        while j < bytes.len()
            && (is_word(bytes[j])
                || (bytes[j] == b'.' && j + 1 < bytes.len() && is_word(bytes[j + 1])))
        {
            j += 1;
        }
        let word = &text[i..j];
        if let Some((first, _)) = word.split_once('.')
            && sections.iter().any(|s| s == first)
            && !(j < bytes.len() && bytes[j].is_ascii_alphabetic())
        {
            out.push(word.to_owned());
        }
        i = j.max(i + 1);
    }
    out
}

fn sections(paths: &[String]) -> Vec<String> {
    paths
        .iter()
        .filter(|p| !p.contains('.') && paths.iter().any(|q| q.starts_with(&format!("{p}."))))
        .cloned()
        .collect()
}

#[test]
fn every_config_key_a_message_names_exists() {
    let paths = key_paths();
    let sections = sections(&paths);
    assert!(sections.iter().any(|s| s == "canary"), "{sections:?}");
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for krate in std::fs::read_dir(&crates).unwrap() {
        let src = krate.unwrap().path().join("src");
        if src.is_dir() {
            rust_files(&src, &mut files);
        }
    }
    assert!(files.len() > 20, "found the workspace sources: {files:?}");
    let mut wrong = Vec::new();
    let mut seen = 0;
    for file in &files {
        if file.ends_with("config_key_tests.rs") {
            continue; // this file names wrong keys on purpose
        }
        let text = std::fs::read_to_string(file).unwrap();
        for lit in literals(&text) {
            for key in key_mentions(&lit, &sections) {
                seen += 1;
                let known = KNOWN_WRONG
                    .iter()
                    .any(|(f, k)| file.ends_with(f) && *k == key);
                if !NOT_KEYS.contains(&key.as_str()) && !known && !paths.contains(&key) {
                    wrong.push(format!("{}: `{key}` in {lit:?}", file.display()));
                }
            }
        }
    }
    assert!(seen > 50, "the scan finds key mentions ({seen})");
    assert!(
        wrong.is_empty(),
        "messages name keys that do not exist:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_scan_catches_a_wrong_key() {
    let paths = key_paths();
    let sections = sections(&paths);
    let lits =
        literals(r#"let m = "set canary.baseline_exception_rate or canary.pct"; // "canary.nope""#);
    assert_eq!(lits.len(), 1, "{lits:?}");
    let found = key_mentions(&lits[0], &sections);
    assert_eq!(found, ["canary.baseline_exception_rate", "canary.pct"]);
    assert!(!paths.contains(&found[0]) && paths.contains(&found[1]));
}

#[test]
fn the_init_template_sets_or_mentions_every_key() {
    let template = include_str!("init_template.toml");
    let cfg = fleetgate_core::config::Config::parse(template, |_| None);
    assert!(cfg.is_ok(), "the template loads: {cfg:?}");
    // `key = …` or `# key = …` lines under their (possibly commented) `[section]` header.
    let mut mentioned = std::collections::BTreeSet::new();
    let mut section = String::new();
    for raw in template.lines() {
        let line = raw.trim().trim_start_matches('#').trim();
        if let Some((header, _)) = line.strip_prefix('[').and_then(|r| r.split_once(']')) {
            section = header.trim().to_owned();
            let mut prefix = String::new();
            for part in section.split('.') {
                if !prefix.is_empty() {
                    prefix.push('.');
                }
                prefix.push_str(part);
                mentioned.insert(prefix.clone());
            }
            continue;
        }
        if let Some((key, _)) = line.split_once('=') {
            let key = key.trim();
            if !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                mentioned.insert(if section.is_empty() {
                    key.to_owned()
                } else {
                    format!("{section}.{key}")
                });
            }
        }
    }
    assert!(mentioned.contains("canary.pct"), "{mentioned:?}");
    let missing: Vec<String> = key_paths()
        .into_iter()
        .filter(|k| !mentioned.contains(k))
        .collect();
    assert!(missing.is_empty(), "init_template.toml lacks: {missing:?}");
}
