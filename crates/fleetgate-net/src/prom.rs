//! The Prometheus text exposition format (0.0.4), written by hand: the handful of counters
//! and gauges fleetgate's listeners expose need no client library.

use std::fmt::Write as _;

/// A label value as the text format wants it: `\`, `"` and newlines escaped.
#[must_use]
pub fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Appends `# HELP` and `# TYPE` lines for `name` (`kind`: `counter` or `gauge`).
pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Appends one sample `name{labels} value`; `labels` are (name, raw value) pairs.
pub fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"{}\"", escape(v));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        let mut out = String::new();
        header(&mut out, "x_total", "counter", "Things.");
        sample(&mut out, "x_total", &[("why", "a\"b"), ("k", "v")], 3.0);
        sample(&mut out, "x_total", &[], 0.5);
        assert_eq!(
            out,
            "# HELP x_total Things.\n# TYPE x_total counter\nx_total{why=\"a\\\"b\",k=\"v\"} 3\nx_total 0.5\n"
        );
    }
}
