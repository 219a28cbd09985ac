//! The pure pieces of the conversion: Kong route paths as prefixes, Kong's secret hashes.

use super::*;

#[test]
fn kong_paths_become_prefixes_or_say_why_not() {
    assert_eq!(route_prefix("/event", false).as_deref(), Ok("/event"));
    assert_eq!(route_prefix("/event/", false).as_deref(), Ok("/event"));
    assert_eq!(route_prefix("/", true).as_deref(), Ok("/"));
    assert_eq!(
        route_prefix("/a-b_c.d~e/f", true).as_deref(),
        Ok("/a-b_c.d~e/f")
    );
    // Format 3.0 marks regexes with `~`; 1.1 and 2.1 paths are regexes when they look like one.
    assert!(
        route_prefix("~/users/\\d+", false)
            .unwrap_err()
            .contains("regular expression")
    );
    assert!(
        route_prefix("/users/\\d+", true)
            .unwrap_err()
            .contains("regular expression")
    );
    assert!(route_prefix("/users/(a|b)", true).is_err());
    for bad in ["/a//b", "/a/../b", "/./a", "/a%2Fb", "event"] {
        assert!(route_prefix(bad, false).is_err(), "{bad}");
    }
}

#[test]
fn kongs_hashes_are_told_from_secrets() {
    assert!(is_hashed_secret(
        "$pbkdf2-sha512$i=10000,l=32$c2FsdA$aGFzaA"
    ));
    assert!(is_hashed_secret(
        "$argon2id$v=19$m=4096,t=3,p=1$c2FsdA$aGFzaA"
    ));
    assert!(is_hashed_secret("$2b$09$abcdefghijklmnopqrstuu"));
    assert!(!is_hashed_secret("clientsecret"));
    assert!(!is_hashed_secret("$not-a-hash"));
}
