//! Unit tests of `warm.rs`.

use super::*;

#[test]
fn one_model_per_line_in_file_order_without_repeats() {
    let (models, problems) = parse(b"sdxl\n  llama-3:8b \n\n# a comment\nsdxl\nvits\r\n");
    assert_eq!(models, ["sdxl", "llama-3:8b", "vits"]);
    assert!(problems.is_empty(), "{problems:?}");
}

#[test]
fn lines_that_are_not_names_are_skipped_and_named() {
    let long = "m".repeat(MAX_NAME_BYTES + 1);
    let text = format!("ok-1\nbad model\n{long}\nmod\u{e9}le\nok-2\n");
    let (models, problems) = parse(text.as_bytes());
    assert_eq!(models, ["ok-1", "ok-2"]);
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(problems[0].contains("line 2") && problems[0].contains("bad model"));
    assert!(problems[1].contains("line 3") && problems[1].contains("..."));
    assert!(problems[2].contains("line 4"));
    assert!(is_name(&"m".repeat(MAX_NAME_BYTES)));
}

#[test]
fn at_most_the_limit_is_sent() {
    let text: String = (0..MAX_WARM_MODELS + 3)
        .map(|i| format!("m{i}\n"))
        .collect();
    let (models, problems) = parse(text.as_bytes());
    assert_eq!(models.len(), MAX_WARM_MODELS);
    assert_eq!(models.last().map(String::as_str), Some("m31"));
    assert_eq!(problems.len(), 1);
    assert!(problems[0].contains("the last 3"), "{problems:?}");
}

#[test]
fn bytes_that_are_not_utf8_spoil_only_their_line() {
    let (models, problems) = parse(b"a\n\xff\xfe\nb\n");
    assert_eq!(models, ["a", "b"]);
    assert_eq!(problems.len(), 1);
}

#[test]
fn read_follows_the_file_as_it_is_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("warm");
    let mut w = WarmModels::new(path.clone());
    assert_eq!(w.path(), path);
    // Missing: nothing is warm.
    assert!(w.read().is_empty());
    std::fs::write(&path, "sdxl\n").unwrap();
    assert_eq!(w.read(), ["sdxl"]);
    assert_eq!(w.read(), ["sdxl"]);
    std::fs::write(&path, "sdxl\nvits\n").unwrap();
    assert_eq!(w.read(), ["sdxl", "vits"]);
    std::fs::write(&path, "").unwrap();
    assert!(w.read().is_empty());
    std::fs::write(&path, "vits").unwrap();
    assert_eq!(w.read(), ["vits"]);
    std::fs::remove_file(&path).unwrap();
    assert!(w.read().is_empty());
}

#[test]
fn only_the_first_bytes_of_a_huge_file_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("warm");
    let mut text = "first\n".to_string();
    text.push_str(&"#".repeat(MAX_FILE_BYTES as usize));
    text.push_str("\nlast\n");
    std::fs::write(&path, text).unwrap();
    assert_eq!(WarmModels::new(path).read(), ["first"]);
}

#[test]
fn a_directory_is_no_file_of_models() {
    let dir = tempfile::tempdir().unwrap();
    assert!(WarmModels::new(dir.path().to_path_buf()).read().is_empty());
}
