//! Header value grammar shared by both sides of the handshake.

use std::fmt;

use http::HeaderMap;
use http::header::{AsHeaderName, HeaderValue};

/// The comma-separated elements of every value of a header (RFC 9110 section 5.6.1:
/// `#element`), trimmed, empty ones dropped. Values that are not visible ASCII are
/// skipped.
pub fn list(headers: &HeaderMap, name: impl AsHeaderName) -> impl Iterator<Item = &str> {
    headers
        .get_all(name)
        .into_iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// Whether a token list header contains `token`, compared case-insensitively (as
/// `Upgrade: websocket` and `Connection: Upgrade` are).
pub fn has_token(headers: &HeaderMap, name: impl AsHeaderName, token: &str) -> bool {
    list(headers, name).any(|t| t.eq_ignore_ascii_case(token))
}

/// The one value of a header that must appear exactly once: `Ok(None)` when absent,
/// `Err(())` when repeated.
#[allow(clippy::result_unit_err)]
pub fn single(headers: &HeaderMap, name: impl AsHeaderName) -> Result<Option<&HeaderValue>, ()> {
    let mut all = headers.get_all(name).into_iter();
    let first = all.next();
    if all.next().is_some() {
        Err(())
    } else {
        Ok(first)
    }
}

/// One offered or accepted extension: `permessage-deflate; client_max_window_bits`
/// (RFC 6455 section 9.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtensionOffer {
    /// The extension token.
    pub name: String,
    /// Its parameters, in order, each with its value if it had one (quotes removed).
    pub params: Vec<(String, Option<String>)>,
}

impl ExtensionOffer {
    /// The value of a parameter: `Some(None)` when present without a value.
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref())
    }
}

impl fmt::Display for ExtensionOffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        for (name, value) in &self.params {
            match value {
                Some(v) => write!(f, "; {name}={v}")?,
                None => write!(f, "; {name}")?,
            }
        }
        Ok(())
    }
}

/// Parses every `Sec-WebSocket-Extensions` value. Elements that do not follow the grammar
/// are returned as `Err` with the offending text, so a server can refuse the handshake
/// or ignore the element.
///
/// ```text
/// Sec-WebSocket-Extensions = extension-list
/// extension-list = 1#extension
/// extension = extension-token *( ";" extension-param )
/// extension-param = token [ "=" (token | quoted-string) ]
/// ```
pub fn extensions(headers: &HeaderMap) -> Result<Vec<ExtensionOffer>, String> {
    // Quoted strings may contain commas in theory; extension parameter values in
    // practice are tokens and numbers, so a plain split keeps the parser simple.
    list(headers, http::header::SEC_WEBSOCKET_EXTENSIONS)
        .map(parse_extension)
        .collect()
}

fn parse_extension(element: &str) -> Result<ExtensionOffer, String> {
    let mut parts = element.split(';').map(str::trim);
    let name = parts.next().unwrap_or_default();
    if !is_token(name) {
        return Err(element.to_owned());
    }
    let mut params = Vec::new();
    for p in parts {
        let (pname, value) = match p.split_once('=') {
            Some((n, v)) => (
                n.trim(),
                Some(unquote(v.trim()).ok_or_else(|| element.to_owned())?),
            ),
            None => (p, None),
        };
        if !is_token(pname) {
            return Err(element.to_owned());
        }
        params.push((pname.to_owned(), value));
    }
    Ok(ExtensionOffer {
        name: name.to_owned(),
        params,
    })
}

fn unquote(v: &str) -> Option<String> {
    let inner = match v.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"')?,
        None => v,
    };
    // "When using the quoted-string syntax variant, the value after quoted-string
    // unescaping MUST conform to the 'token' ABNF."
    is_token(inner).then(|| inner.to_owned())
}

/// RFC 9110 `token`: one or more `tchar`.
pub fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A header map of `pairs`, in order (for the handshake tests).
#[cfg(test)]
pub(crate) fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut m = HeaderMap::new();
    for (k, v) in pairs {
        m.append(*k, HeaderValue::from_static(v));
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_lists() {
        let h = map(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "WebSocket"),
        ]);
        assert!(has_token(&h, "connection", "upgrade"));
        assert!(has_token(&h, "upgrade", "websocket"));
        assert!(!has_token(&h, "connection", "close"));
        let h = map(&[("connection", "keep-alive"), ("connection", "upgrade")]);
        assert!(has_token(&h, "connection", "Upgrade"));
    }

    #[test]
    fn extension_offers() {
        let h = map(&[(
            "sec-websocket-extensions",
            "permessage-deflate; client_max_window_bits, permessage-deflate; server_max_window_bits=\"10\"",
        )]);
        let offers = extensions(&h).unwrap();
        assert_eq!(offers.len(), 2);
        assert_eq!(offers[0].name, "permessage-deflate");
        assert_eq!(offers[0].param("client_max_window_bits"), Some(None));
        assert_eq!(offers[1].param("server_max_window_bits"), Some(Some("10")));
        assert_eq!(
            offers[1].to_string(),
            "permessage-deflate; server_max_window_bits=10"
        );
        let bad = map(&[("sec-websocket-extensions", "foo; bar=\"a b\"")]);
        assert!(extensions(&bad).is_err());
    }
}
