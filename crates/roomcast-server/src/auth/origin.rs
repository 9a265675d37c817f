//! Which web pages may use the server: the `Origin` a browser sends with a WebSocket
//! handshake and with cross-origin HTTP requests. A request without `Origin` comes from
//! a client that is not a browser page (a backend, the CLI, curl) and is let in: the
//! header protects browser users from other sites, not the server from programs.

use super::grants::matches;

/// Whether a request with `origin` may be served: it is the server's own origin (the
/// same host and port as the request's `Host`), or it matches one of `allowed`, patterns
/// such as `https://*.example.com` or `http://127.0.0.1:*` (`*` is any run of
/// characters). `null` (sandboxed pages, `file:` URLs) is allowed only by the pattern
/// `null`.
pub(crate) fn allowed(origin: &str, host: Option<&str>, allowed: &[String]) -> bool {
    if allowed.iter().any(|p| matches(p, origin)) {
        return true;
    }
    let authority = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    match (authority, host) {
        (Some(a), Some(h)) => a.eq_ignore_ascii_case(h.trim()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_origin_patterns_and_nothing_else() {
        let none: Vec<String> = Vec::new();
        assert!(allowed(
            "http://127.0.0.1:8080",
            Some("127.0.0.1:8080"),
            &none
        ));
        assert!(allowed(
            "https://Chat.Example.com",
            Some("chat.example.com"),
            &none
        ));
        assert!(!allowed(
            "http://127.0.0.1:9999",
            Some("127.0.0.1:8080"),
            &none
        ));
        assert!(!allowed(
            "https://evil.example",
            Some("chat.example.com"),
            &none
        ));
        assert!(!allowed("null", Some("chat.example.com"), &none));
        assert!(!allowed("http://a", None, &none));
        let list = vec![
            "https://*.example.com".to_owned(),
            "http://127.0.0.1:*".to_owned(),
        ];
        assert!(allowed("https://app.example.com", Some("api.other"), &list));
        assert!(allowed("http://127.0.0.1:3000", Some("api.other"), &list));
        assert!(!allowed(
            "https://example.com.evil.net",
            Some("api.other"),
            &list
        ));
        assert!(!allowed("http://app.example.com", Some("api.other"), &list));
        assert!(allowed("null", None, &["null".to_owned()]));
    }
}
