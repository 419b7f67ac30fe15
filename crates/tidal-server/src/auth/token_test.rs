//! Tokens' text: generated tokens parse back, malformed ones are refused with the part named, secrets never print.

use super::*;

#[test]
fn a_generated_token_parses_back_with_its_id_and_hash() {
    let t = Token::generate().unwrap();
    let text = t.reveal();
    assert!(text.starts_with("tdl_"));
    assert_eq!(text.len(), 4 + 16 + 1 + 43, "{text}");
    assert!(is_id(t.id()));
    let back = Token::parse(&text).unwrap();
    assert_eq!(back.id(), t.id());
    assert_eq!(back.hash(), t.hash());
    assert!(back.verify(&t.hash()));
    assert_eq!(back.reveal(), text);
    // A file's trailing newline is fine.
    assert_eq!(Token::parse(&format!("{text}\n")).unwrap().id(), t.id());
}

#[test]
fn tokens_differ_and_a_secret_is_checked_against_its_own_hash_only() {
    let a = Token::generate().unwrap();
    let b = Token::generate().unwrap();
    assert_ne!(a.id(), b.id());
    assert_ne!(a.hash(), b.hash());
    assert!(!a.verify(&b.hash()));
    let mut near = a.hash();
    near[31] ^= 1;
    assert!(!a.verify(&near));
}

#[test]
fn the_hash_is_sha256_of_the_secret_bytes() {
    // The secret of 32 zero bytes is 43 'A's in base64url.
    let t = Token::parse(&format!("tdl_0123456789abcdef_{}", "A".repeat(43))).unwrap();
    let want = "66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925";
    assert_eq!(hex(&t.hash()), want);
}

#[test]
fn a_secret_may_contain_underscores() {
    // base64url uses '_' for 63: splitn(3) keeps it in the secret.
    let secret = URL_SAFE_NO_PAD.encode([0xff; 32]);
    assert!(secret.contains('_'), "{secret}");
    let t = Token::parse(&format!("tdl_00000000000000ff_{secret}")).unwrap();
    assert_eq!(t.id(), "00000000000000ff");
}

#[test]
fn malformed_tokens_name_what_is_wrong() {
    let ok_secret = "A".repeat(43);
    let cases = [
        ("", "does not start with tdl_"),
        ("tdx_0123456789abcdef_x", "does not start with tdl_"),
        ("tdl", "no id"),
        ("tdl_0123456789abcdef", "no secret"),
        ("tdl_0123456789ABCDEF_x", "16 lowercase hex"),
        ("tdl_0123_x", "16 lowercase hex"),
        ("tdl_0123456789abcdef_!!!", "not base64url"),
        ("tdl_0123456789abcdef_AAAA", "not 32 bytes"),
        ("tdl_0123456789abcdef_AAAA=", "not base64url"),
    ];
    for (text, why) in cases {
        let e = Token::parse(text).unwrap_err();
        assert!(e.to_string().contains(why), "{text:?}: {e}");
    }
    let padded = format!("tdl_0123456789abcdef_{ok_secret}=");
    assert!(Token::parse(&padded).is_err());
}

#[test]
fn nothing_prints_the_secret() {
    let t = Token::generate().unwrap();
    let text = t.reveal();
    let secret = text.splitn(3, '_').nth(2).unwrap().to_string();
    assert_eq!(secret.len(), 43);
    let shown = format!("{t:?}");
    assert!(shown.contains(t.id()), "{shown}");
    assert!(!shown.contains(&secret[..10]), "{shown}");
    // A refusal names the part, never the text.
    let e = Token::parse(&format!("tdl_0123456789abcdef_{}", &secret[..20])).unwrap_err();
    assert!(!e.to_string().contains(&secret[..10]));
}

#[test]
fn bearer_headers() {
    let t = Token::generate().unwrap();
    let text = t.reveal();
    assert_eq!(
        parse_bearer(&format!("Bearer {text}")).unwrap().id(),
        t.id()
    );
    assert_eq!(
        parse_bearer(&format!("bearer {text}")).unwrap().id(),
        t.id()
    );
    assert_eq!(
        parse_bearer(&format!("Basic {text}")).unwrap_err(),
        TokenError::NotBearer
    );
    assert_eq!(parse_bearer(&text).unwrap_err(), TokenError::NotBearer);
    assert_eq!(parse_bearer("").unwrap_err(), TokenError::NotBearer);
    assert!(matches!(
        parse_bearer("Bearer tdl_nope"),
        Err(TokenError::Malformed(_))
    ));
}

#[test]
fn ttls() {
    assert_eq!(parse_ttl("90s"), Ok(90_000));
    assert_eq!(parse_ttl("15m"), Ok(15 * 60_000));
    assert_eq!(parse_ttl("12h"), Ok(12 * 3_600_000));
    assert_eq!(parse_ttl("30d"), Ok(30 * DAY_MS));
    assert_eq!(parse_ttl("3660d"), Ok(MAX_TTL_MS));
    for bad in [
        "",
        "d",
        "0d",
        "30",
        "30w",
        "-1d",
        "+1d",
        "1.5h",
        " d",
        "3661d",
        "99999999999999999999d",
        "30D",
        // A last character of more than one byte (found by fuzzing).
        "5é",
        "é",
    ] {
        assert!(parse_ttl(bad).is_err(), "{bad:?}");
    }
}
