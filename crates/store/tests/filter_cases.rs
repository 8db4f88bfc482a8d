//! Golden cases for the filter grammar: `tests/golden/filter-cases.txt` lists filters,
//! `filter-results.txt` what each parses to (or the error). Rewrite the results with
//! `TRACELAKE_BLESS=1 cargo test -p tracelake-store`; never edit them by hand.

use std::fmt::Write as _;
use std::path::PathBuf;

use tracelake_store::{parse_filter, parse_order_by};

fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name)
}

#[test]
fn every_filter_case_parses_or_fails_as_recorded() {
    let cases = std::fs::read_to_string(golden("filter-cases.txt")).unwrap();
    let mut out = String::new();
    for line in cases.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let result = match parse_filter(line) {
            Ok(filter) => format!("{:?}", filter.clauses),
            Err(err) => format!("error: {err}"),
        };
        writeln!(out, "{line}\n  => {result}").unwrap();
    }
    let path = golden("filter-results.txt");
    if std::env::var_os("TRACELAKE_BLESS").is_some() {
        std::fs::write(&path, &out).unwrap();
    }
    let expected = std::fs::read_to_string(&path).expect("results file (TRACELAKE_BLESS=1 to create)");
    assert_eq!(out, expected, "rerun with TRACELAKE_BLESS=1 if the change is intended");
}

#[test]
fn valid_filters_parse_and_invalid_ones_name_a_column() {
    let cases = std::fs::read_to_string(golden("filter-cases.txt")).unwrap();
    let mut blocks = cases.split("\n\n").skip(1);
    let (valid, invalid) = (blocks.next().unwrap(), blocks.next().unwrap());
    for line in valid.lines() {
        assert!(parse_filter(line).is_ok(), "{line} should parse: {:?}", parse_filter(line));
    }
    for line in invalid.lines() {
        let err = parse_filter(line).expect_err(line);
        assert!(err.column >= 1 && err.column <= line.chars().count() + 1, "{line}: column {}", err.column);
    }
}

#[test]
fn an_empty_filter_matches_everything() {
    assert!(parse_filter("").unwrap().clauses.is_empty());
    assert!(parse_filter("   ").unwrap().clauses.is_empty());
}

#[test]
fn order_by_accepts_mlflow_keys_and_refuses_duplicates() {
    let ok =
        parse_order_by(&["timestamp_ms DESC", "tag.env", "metadata.`mlflow.sourceRun` asc", "experiment_id"]);
    assert_eq!(ok.unwrap().len(), 4);
    let dup = parse_order_by(&["timestamp_ms", "timestamp DESC"]).unwrap_err();
    assert_eq!(dup.to_string(), "invalid filter at column 1: \"timestamp\" appears twice in order_by");
    let bad = parse_order_by(&["timestamp_ms sideways"]).unwrap_err();
    assert_eq!(
        bad.to_string(),
        "invalid filter at column 14: expected ASC or DESC, found \"sideways\" (try timestamp_ms DESC)"
    );
    assert!(parse_order_by(&["text"]).is_err());
}
