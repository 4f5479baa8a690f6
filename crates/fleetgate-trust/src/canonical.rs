//! Canonical JSON: the exact bytes Python's
//! `json.dumps(obj, sort_keys=True, separators=(',', ':'))` produces
//! (default `ensure_ascii=True`).
//!
//! These are the bytes every signature in fleetgate covers, and the bytes
//! HART's verifier recomputes, so they must match Python byte for byte:
//!
//! - object keys sorted by Unicode code point (Python's `str` ordering; this
//!   equals UTF-8 byte order, which is what Rust's `str` ordering is; it is
//!   *not* UTF-16 order, which differs for astral characters);
//! - no whitespace, `,` and `:` separators;
//! - strings escape `"` and `\`, use `\n \r \t \b \f` for those controls,
//!   and `\u00XX` (lowercase hex) for every other character outside
//!   printable ASCII `0x20..=0x7e` — including DEL `0x7f` — with astral
//!   characters written as a UTF-16 surrogate pair; `/` is not escaped;
//! - integers in decimal; **floats are refused** (their text differs between
//!   Python and Rust, so they may never appear in signed data).
//!
//! [`parse_strict`] is the matching parser used for everything received from
//! a file or a peer: it refuses duplicate object keys, which Python and
//! `serde_json` would both silently resolve to the last value.

use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::fmt;

/// Deepest nesting [`to_canonical_bytes`] accepts (serde_json's parser
/// stops at 128 too).
pub const MAX_DEPTH: usize = 128;

/// Why a value has no canonical form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanonicalError {
    /// A float appeared; signed data may hold integers only.
    #[error(
        "canonicalise JSON: {path} holds the non-integer number {value}; signed data may contain integers only"
    )]
    Float {
        /// JSON-pointer-like location of the number.
        path: String,
        /// The number as serde_json prints it.
        value: String,
    },
    /// Nesting deeper than [`MAX_DEPTH`].
    #[error("canonicalise JSON: nesting deeper than {MAX_DEPTH} levels at {path}")]
    TooDeep {
        /// Location where the limit was hit.
        path: String,
    },
}

/// Serialises `value` exactly as Python's
/// `json.dumps(value, sort_keys=True, separators=(',', ':'))` does.
///
/// # Errors
/// [`CanonicalError::Float`] for any non-integer number,
/// [`CanonicalError::TooDeep`] past [`MAX_DEPTH`] levels.
pub fn to_canonical_bytes(value: &Value) -> Result<Vec<u8>, CanonicalError> {
    let mut out = Vec::with_capacity(256);
    let mut path = String::new();
    write_value(&mut out, value, 0, &mut path)?;
    Ok(out)
}

fn write_value(
    out: &mut Vec<u8>,
    value: &Value,
    depth: usize,
    path: &mut String,
) -> Result<(), CanonicalError> {
    if depth > MAX_DEPTH {
        return Err(CanonicalError::TooDeep {
            path: display_path(path),
        });
    }
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => write_number(out, n, path)?,
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                let len = path.len();
                path.push('/');
                path.push_str(&i.to_string());
                write_value(out, item, depth + 1, path)?;
                path.truncate(len);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            // Code point order == UTF-8 byte order == Rust `str` order.
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(out, k);
                out.push(b':');
                let len = path.len();
                path.push('/');
                path.push_str(k);
                write_value(out, v, depth + 1, path)?;
                path.truncate(len);
            }
            out.push(b'}');
        }
    }
    Ok(())
}

fn display_path(path: &str) -> String {
    if path.is_empty() {
        "the document root".to_owned()
    } else {
        format!("field {path:?}")
    }
}

fn write_number(out: &mut Vec<u8>, n: &Number, path: &str) -> Result<(), CanonicalError> {
    if let Some(i) = n.as_i64() {
        out.extend_from_slice(i.to_string().as_bytes());
    } else if let Some(u) = n.as_u64() {
        out.extend_from_slice(u.to_string().as_bytes());
    } else {
        return Err(CanonicalError::Float {
            path: display_path(path),
            value: n.to_string(),
        });
    }
    Ok(())
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn push_u16_escape(out: &mut Vec<u8>, unit: u16) {
    out.extend_from_slice(b"\\u");
    for shift in [12u16, 8, 4, 0] {
        out.push(HEX[usize::from((unit >> shift) & 0xf)]);
    }
}

/// Python's `py_encode_basestring_ascii`.
fn write_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            '\u{08}' => out.extend_from_slice(b"\\b"),
            '\u{0c}' => out.extend_from_slice(b"\\f"),
            ' '..='~' => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    push_u16_escape(out, *unit);
                }
            }
        }
    }
    out.push(b'"');
}

/// Why received bytes are not acceptable JSON.
#[derive(Debug, thiserror::Error)]
#[error("parse JSON: {0}")]
pub struct ParseError(#[from] serde_json::Error);

/// Parses JSON the way every verifier in fleetgate must: like
/// `serde_json::from_slice`, but an object with a repeated key is an error
/// rather than "last one wins".
///
/// # Errors
/// Invalid JSON, trailing data, a duplicate key, or nesting beyond
/// serde_json's recursion limit.
pub fn parse_strict(bytes: &[u8]) -> Result<Value, ParseError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = StrictSeed.deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

struct StrictSeed;

impl<'de> DeserializeSeed<'de> for StrictSeed {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // Kept so the error names the field; canonicalisation refuses it.
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            if map.contains_key(&key) {
                return Err(de::Error::custom(format_args!(
                    "duplicate object key {key:?}"
                )));
            }
            let StrictValue(v) = access.next_value()?;
            map.insert(key, v);
        }
        Ok(Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn canon(v: &Value) -> String {
        String::from_utf8(to_canonical_bytes(v).expect("canonical")).expect("ascii")
    }

    #[test]
    fn escapes_like_python() {
        // Expected strings produced by Python 3.11 json.dumps(..., sort_keys=True, separators=(',', ':')).
        assert_eq!(canon(&json!("a/b\"c\\")), r#""a/b\"c\\""#);
        assert_eq!(
            canon(&json!("\n\r\t\u{8}\u{c}\u{0}\u{1f}\u{7f}")),
            r#""\n\r\t\b\f\u0000\u001f\u007f""#
        );
        assert_eq!(canon(&json!("é€\u{ffff}")), r#""\u00e9\u20ac\uffff""#);
        assert_eq!(canon(&json!("😀")), r#""\ud83d\ude00""#);
    }

    #[test]
    fn keys_sort_by_code_point_not_utf16() {
        // U+E000 < U+10000 in code points, but UTF-16 would put the surrogate
        // pair (0xD800..) before 0xE000.
        let v = json!({"\u{10000}": 1, "\u{e000}": 2, "b": 3, "B": 4, "": 5});
        assert_eq!(
            canon(&v),
            r#"{"":5,"B":4,"b":3,"\ue000":2,"\ud800\udc00":1}"#
        );
    }

    #[test]
    fn floats_are_refused_with_their_location() {
        let err = to_canonical_bytes(&json!({"a": [1, 2.5]})).unwrap_err();
        assert_eq!(
            err,
            CanonicalError::Float {
                path: "field \"/a/1\"".into(),
                value: "2.5".into()
            }
        );
        assert_eq!(
            canon(&json!([-5, 0, u64::MAX, i64::MIN])),
            "[-5,0,18446744073709551615,-9223372036854775808]"
        );
    }

    #[test]
    fn parse_strict_refuses_duplicate_keys() {
        let err = parse_strict(br#"{"a":1,"b":{"c":1,"c":2}}"#).unwrap_err();
        assert!(
            err.to_string().contains("duplicate object key \"c\""),
            "{err}"
        );
        assert!(parse_strict(br#"{"a":1} x"#).is_err());
        assert_eq!(
            parse_strict(br#"{"a":[1,"x",null,true]}"#).unwrap(),
            json!({"a":[1,"x",null,true]})
        );
    }
}
