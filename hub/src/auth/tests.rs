//! Token file parsing and checking, and certificate identities.

use super::tls::certificate_identities;
use super::tokens::AdminTokens;

const TOKEN_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaa";
const TOKEN_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbb";

#[test]
fn token_files_accept_named_and_anonymous_tokens() {
    let text = format!("# operators\nalice {TOKEN_A}\n\n  {TOKEN_B}  \n");
    let tokens = AdminTokens::parse(&text, "tokens").unwrap();
    assert_eq!(tokens.len(), 2);
    assert_eq!(
        tokens.check(TOKEN_A).unwrap().name.as_deref(),
        Some("alice")
    );
    assert_eq!(tokens.check(TOKEN_B).unwrap().name, None);
    assert!(tokens.check("cccccccccccccccccccccccc").is_none());
    assert!(tokens.check("").is_none());
    assert!(tokens.check(&TOKEN_A[1..]).is_none());
    // Debug never shows digests or tokens.
    let debug = format!("{tokens:?}");
    assert!(
        debug.contains("alice") && !debug.contains(TOKEN_A),
        "{debug}"
    );
}

#[test]
fn bad_token_files_name_the_line_and_never_quote_the_token() {
    let cases = [
        ("short1234\n".to_string(), "line 1", "shorter than 16"),
        (format!("{TOKEN_A}\n{TOKEN_A}\n"), "line 2", "listed twice"),
        (format!("a b {TOKEN_A}\n"), "line 1", "NAME TOKEN"),
        ("# nothing\n\n".to_string(), "token_file", "holds no token"),
    ];
    for (text, place, why) in cases {
        let err = AdminTokens::parse(&text, "tokens.txt")
            .unwrap_err()
            .to_string();
        assert!(err.contains(place) && err.contains(why), "{text:?}: {err}");
        assert!(
            !err.contains(TOKEN_A) && !err.contains("short1234"),
            "{err}"
        );
    }
}

#[test]
fn identities_are_sans_then_common_names() {
    let mut params =
        rcgen::CertificateParams::new(vec!["us-east".to_string(), "Agent.Example.COM".to_string()])
            .unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "us-east-agent");
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let identities = certificate_identities(cert.der()).unwrap();
    assert_eq!(
        identities,
        ["us-east", "agent.example.com", "us-east-agent"]
    );
    assert!(certificate_identities(b"not a certificate").is_err());
}
