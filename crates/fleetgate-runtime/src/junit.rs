//! Reading the TEST gate's JUnit XML report (with nextest's `quick-junit`).

use crate::RuntimeError;
use fleetgate_core::TestCounts;
use quick_junit::{NonSuccessKind, Report, TestCaseStatus};
use std::path::Path;

/// Largest report read.
pub const MAX_REPORT_BYTES: u64 = 64 * 1024 * 1024;

/// Count the test cases of a report on disk.
pub fn read_counts(path: &Path) -> Result<TestCounts, RuntimeError> {
    read_counts_keeping(path, None)
}

/// [`read_counts`], also writing the bytes read to `keep` (when given) before parsing
/// them: the evidence kept is exactly the report judged.
pub fn read_counts_keeping(path: &Path, keep: Option<&Path>) -> Result<TestCounts, RuntimeError> {
    let bytes = match fleetgate_trust::fsutil::read_capped(path, MAX_REPORT_BYTES) {
        Ok(fleetgate_trust::fsutil::Limited::Bytes(b)) => b,
        Ok(fleetgate_trust::fsutil::Limited::TooBig(size)) => {
            return Err(crate::ReportError::TooLarge {
                what: "JUnit report",
                path: path.to_owned(),
                size: fleetgate_trust::fsutil::Oversize(size),
                limit: MAX_REPORT_BYTES,
            }
            .into());
        }
        Err(e) => return Err(RuntimeError::io("read JUnit report", path, e)),
    };
    let text = String::from_utf8(bytes).map_err(|e| {
        RuntimeError::io(
            "read JUnit report",
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        )
    })?;
    if let Some(keep) = keep {
        if let Some(dir) = keep.parent() {
            std::fs::create_dir_all(dir).map_err(|e| RuntimeError::io("create", dir, e))?;
        }
        fleetgate_store::write_atomic(keep, text.as_bytes(), None)
            .map_err(|e| RuntimeError::io("keep JUnit report", keep, e))?;
    }
    parse_counts(&text).map_err(|e| {
        RuntimeError::Report(crate::ReportError::Malformed {
            what: "JUnit report",
            path: path.to_owned(),
            format: "JUnit XML",
            source: e.into(),
        })
    })
}

/// Count the test cases of a report. Accepts a `<testsuites>` root or a single
/// `<testsuite>` root (as some runners write).
pub fn parse_counts(xml: &str) -> Result<TestCounts, String> {
    let body = xml.trim_start_matches('\u{feff}').trim_start();
    let body = if body.starts_with("<?xml") {
        body.split_once("?>")
            .map(|(_, r)| r)
            .unwrap_or(body)
            .trim_start()
    } else {
        body
    };
    let report = if body.starts_with("<testsuite ") || body.starts_with("<testsuite>") {
        Report::deserialize_from_str(&format!("<testsuites>{body}</testsuites>"))
    } else {
        Report::deserialize_from_str(body)
    }
    .map_err(|e| e.to_string())?;
    let mut c = TestCounts {
        passed: 0,
        failed: 0,
        errored: 0,
        skipped: 0,
    };
    for suite in &report.test_suites {
        for case in &suite.test_cases {
            match &case.status {
                TestCaseStatus::Success { .. } => c.passed += 1,
                TestCaseStatus::NonSuccess {
                    kind: NonSuccessKind::Failure,
                    ..
                } => c.failed += 1,
                TestCaseStatus::NonSuccess {
                    kind: NonSuccessKind::Error,
                    ..
                } => c.errored += 1,
                TestCaseStatus::Skipped { .. } => c.skipped += 1,
            }
        }
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report path that is a device or FIFO (a test tool's `--junit /dev/stdout`, a
    /// symlink to `/dev/zero`) has no size: it is read up to the limit and refused, not
    /// read until memory runs out; a report over the limit is refused by its size.
    #[test]
    fn a_report_is_read_only_up_to_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let endless = dir.path().join("endless.xml");
        std::os::unix::fs::symlink("/dev/zero", &endless).unwrap();
        let err = read_counts(&endless).unwrap_err().to_string();
        assert!(err.contains("no size the file system tells"), "{err}");
        assert!(
            err.contains(&format!("{MAX_REPORT_BYTES}-byte limit")),
            "{err}"
        );
        let big = dir.path().join("big.xml");
        std::fs::write(
            &big,
            vec![b' '; usize::try_from(MAX_REPORT_BYTES).unwrap() + 1],
        )
        .unwrap();
        let err = read_counts(&big).unwrap_err().to_string();
        assert!(
            err.contains(&format!("{} bytes, over", MAX_REPORT_BYTES + 1)),
            "{err}"
        );
    }

    #[test]
    fn counts_every_status_in_both_root_forms() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="t" tests="5" failures="1" errors="1">
  <testsuite name="s" tests="5" failures="1" errors="1" skipped="1">
    <testcase name="a"/>
    <testcase name="b"/>
    <testcase name="c"><failure message="boom">trace</failure></testcase>
    <testcase name="d"><error message="panic"/></testcase>
    <testcase name="e"><skipped/></testcase>
  </testsuite>
</testsuites>"#;
        let c = parse_counts(xml).unwrap();
        assert_eq!(
            c,
            TestCounts {
                passed: 2,
                failed: 1,
                errored: 1,
                skipped: 1
            }
        );
        let single = r#"<?xml version="1.0"?><testsuite name="s" tests="1"><testcase name="a"/></testsuite>"#;
        assert_eq!(parse_counts(single).unwrap().passed, 1);
        assert!(parse_counts("not xml at all").is_err());
        assert!(parse_counts("<testsuites><testsuite name=\"s\"><testcase").is_err());
    }
}
