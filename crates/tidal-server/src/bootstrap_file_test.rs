//! Tests of the choice of bootstrap token file and of the file written on `--init`.

use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::config::RawConfig;

fn config(data: &Path, init: bool, auth: Option<AuthMode>, file: Option<&str>) -> ServerConfig {
    RawConfig {
        id: Some(1),
        dc: Some("dc-a".into()),
        listen: Some("127.0.0.1:7001".into()),
        data: Some(data.into()),
        init: Some(init),
        auth,
        bootstrap_token_file: file.map(PathBuf::from),
        ..RawConfig::default()
    }
    .validate()
    .unwrap()
}

#[test]
fn init_under_tokens_writes_a_private_token_once_and_reuses_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE);
    let c = config(dir.path(), true, None, None);
    assert_eq!(
        choose(&c, true).unwrap(),
        Source::DataDir(path.clone(), true)
    );
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("tdl_") && text.ends_with('\n'), "{text}");
    assert_eq!(text.lines().count(), 1);
    Token::parse(&text).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // A restart, with or without --init, reads the same file.
    for init in [true, false] {
        let c = config(dir.path(), init, Some(AuthMode::Tokens), None);
        assert_eq!(
            choose(&c, false).unwrap(),
            Source::DataDir(path.clone(), false)
        );
    }
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
}

#[test]
fn nothing_is_written_without_init_on_a_fresh_dir_under_tokens() {
    let dir = tempfile::tempdir().unwrap();
    // A learner to be, and an --init ignored because the directory has state.
    for (init, fresh) in [(false, true), (true, false)] {
        let c = config(dir.path(), init, None, None);
        assert_eq!(choose(&c, fresh).unwrap(), Source::Given(None));
    }
    // --auth none, and a file of the operator's.
    let c = config(dir.path(), true, Some(AuthMode::None), None);
    assert_eq!(choose(&c, true).unwrap(), Source::Given(None));
    let c = config(dir.path(), true, None, Some("/etc/tidal/admin.token"));
    assert_eq!(
        choose(&c, true).unwrap(),
        Source::Given(Some("/etc/tidal/admin.token".into()))
    );
    assert!(!dir.path().join(FILE).exists());
}
