//! Matcher unit tests.

use super::*;

#[test]
fn prefixes_match_element_wise() {
    for (prefix, path, want) in [
        ("/abc", "/abc", true),
        ("/abc", "/abc/", true),
        ("/abc", "/abc/def", true),
        ("/abc", "/abcd", false),
        ("/abc/", "/abc", true),
        ("/abc/", "/abc/def", true),
        ("/", "/anything", true),
        ("/v2", "/v2example", false),
        ("/Abc", "/abc", false),
    ] {
        assert_eq!(
            PathMatcher::prefix(prefix).matches(path),
            want,
            "{prefix} vs {path}"
        );
    }
}

#[test]
fn regexes_are_anchored() {
    let r = anchored_regex("/api/[a-z]+").unwrap();
    assert!(r.is_match("/api/users"));
    assert!(!r.is_match("/api/users/1"));
    assert!(!r.is_match("/x/api/users"));
}

#[test]
fn query_strings_decode() {
    assert_eq!(
        parse_query("a=1&b=hello%20world&c=x+y&d&e=%zz"),
        vec![
            ("a".into(), "1".into()),
            ("b".into(), "hello world".into()),
            ("c".into(), "x y".into()),
            ("d".into(), String::new()),
            ("e".into(), "%zz".into()),
        ]
    );
}

#[test]
fn first_repeated_query_value_counts() {
    let matcher = RequestMatcher {
        path: PathMatcher::prefix("/"),
        method: None,
        headers: vec![],
        query: vec![QueryMatcher {
            name: "animal".into(),
            value: ValueMatcher::Exact("whale".into()),
        }],
    };
    let method = Method::GET;
    let headers = HeaderMap::new();
    let uri: http::Uri = "/?animal=whale&animal=dolphin".parse().unwrap();
    assert!(matcher.matches(&mut RequestView::new(&uri, &method, &headers)));
    let uri: http::Uri = "/?animal=dolphin&animal=whale".parse().unwrap();
    assert!(!matcher.matches(&mut RequestView::new(&uri, &method, &headers)));
}
