//! Unit tests of `lists.rs`.

use super::*;

#[test]
fn gpus() {
    assert_eq!(
        parse_gpu("A100:81920").unwrap(),
        Gpu {
            model: "A100".into(),
            memory_mb: 81920
        }
    );
    assert_eq!(
        parse_gpu(" nvidia:L40S:46068 ").unwrap(),
        Gpu {
            model: "nvidia:L40S".into(),
            memory_mb: 46068
        }
    );
    for bad in ["A100", ":8000", "A100:", "A100:80GB", "A100:-1"] {
        let e = parse_gpu(bad).unwrap_err();
        assert!(
            e.contains("MODEL:MEM_MB") || e.contains("number of MB"),
            "{bad}: {e}"
        );
    }
}

#[test]
fn labels() {
    assert_eq!(parse_label("zone=a").unwrap(), ("zone".into(), "a".into()));
    assert_eq!(parse_label("k=").unwrap(), ("k".into(), "".into()));
    assert_eq!(
        parse_label("expr=a=b").unwrap(),
        ("expr".into(), "a=b".into())
    );
    assert!(parse_label("novalue").is_err());
    assert!(parse_label("=v").is_err());
    let m = labels_map(vec![("a".into(), "1".into()), ("b".into(), "2".into())]).unwrap();
    assert_eq!(m.len(), 2);
    let e = labels_map(vec![("a".into(), "1".into()), ("a".into(), "2".into())]).unwrap_err();
    assert!(e.contains("given twice"), "{e}");
}

#[test]
fn clean_rejects_empty_items() {
    assert_eq!(
        clean("--models", vec![" a ".into(), "b".into()]).unwrap(),
        vec!["a", "b"]
    );
    assert!(clean("--models", vec!["a".into(), "".into()])
        .unwrap_err()
        .contains("--models"));
}
