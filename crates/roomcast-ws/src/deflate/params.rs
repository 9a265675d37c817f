//! Negotiating permessage-deflate: the offer a client makes, the answer a server gives,
//! and the checks each side makes of the other's (RFC 7692 section 7.1).

use crate::handshake::ExtensionOffer;

/// The extension's token.
pub const NAME: &str = "permessage-deflate";

/// What one side is willing to do, before negotiation.
///
/// The defaults take whatever the peer asks and ask nothing of it: each direction keeps
/// its compression context between messages with a 32 KiB window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeflateConfig {
    /// Our compressor's LZ77 window, as a power of two (9 to 15; 8 is sent as 9, which
    /// zlib keeps within 256 bytes of distance).
    pub max_window_bits: u8,
    /// Reset our compressor after every message (less memory kept per connection, and a
    /// message compressed for one connection is valid on any other that also resets).
    pub no_context_takeover: bool,
    /// Ask the peer to reset its compressor after every message.
    pub request_peer_no_context_takeover: bool,
    /// Ask the peer to use at most this window (`None`: its choice, up to 15).
    pub request_peer_max_window_bits: Option<u8>,
    /// Messages shorter than this are sent uncompressed (RFC 7692 lets a sender leave any
    /// message uncompressed: RSV1 clear).
    pub min_size: usize,
}

impl DeflateConfig {
    /// Sets [`DeflateConfig::min_size`].
    pub fn min_size(mut self, bytes: usize) -> Self {
        self.min_size = bytes;
        self
    }

    /// Sets [`DeflateConfig::max_window_bits`].
    pub fn max_window_bits(mut self, bits: u8) -> Self {
        self.max_window_bits = bits;
        self
    }

    /// Sets [`DeflateConfig::no_context_takeover`].
    pub fn no_context_takeover(mut self, on: bool) -> Self {
        self.no_context_takeover = on;
        self
    }

    /// Sets [`DeflateConfig::request_peer_no_context_takeover`].
    pub fn request_peer_no_context_takeover(mut self, on: bool) -> Self {
        self.request_peer_no_context_takeover = on;
        self
    }

    /// Sets [`DeflateConfig::request_peer_max_window_bits`].
    pub fn request_peer_max_window_bits(mut self, bits: Option<u8>) -> Self {
        self.request_peer_max_window_bits = bits;
        self
    }
}

impl Default for DeflateConfig {
    fn default() -> Self {
        Self {
            max_window_bits: 15,
            no_context_takeover: false,
            request_peer_no_context_takeover: false,
            request_peer_max_window_bits: None,
            min_size: 0,
        }
    }
}

/// What was agreed for one connection, from the server's point of view as the RFC
/// names the parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// The server resets its compressor after each message.
    pub server_no_context_takeover: bool,
    /// The client resets its compressor after each message.
    pub client_no_context_takeover: bool,
    /// The server's compressor window (8 to 15).
    pub server_max_window_bits: u8,
    /// The client's compressor window (8 to 15).
    pub client_max_window_bits: u8,
}

/// Why a server's answer cannot be taken (the client must fail the connection).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NegotiationError {
    /// A parameter the RFC does not define, twice, or with a bad value.
    #[error("permessage-deflate answer: {0}")]
    Invalid(String),
    /// The answer breaks what the offer asked ("a client MUST _Fail the WebSocket
    /// Connection_ if ...").
    #[error("permessage-deflate answer does not match the offer: {0}")]
    Mismatch(&'static str),
}

/// The parameters of one offer or answer, each at most once with a valid value.
#[derive(Debug, Default)]
struct Parsed {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: present without a value (only in an offer).
    client_max_window_bits: Option<Option<u8>>,
}

fn window_bits(value: Option<&str>) -> Result<u8, String> {
    // "The value ... MUST conform to the ABNF below: 1*DIGIT, %x38-39 / "1" %x30-35" (8
    // to 15, no leading zero).
    let v = value.ok_or("a window size needs a value")?;
    match v.parse::<u8>() {
        Ok(n @ 8..=15) if !v.starts_with('0') => Ok(n),
        _ => Err(format!("window bits {v:?} are not 8 to 15")),
    }
}

fn parse(ext: &ExtensionOffer, in_offer: bool) -> Result<Parsed, String> {
    let mut p = Parsed::default();
    let mut seen: Vec<&str> = Vec::new();
    for (name, value) in &ext.params {
        let name = name.to_ascii_lowercase();
        // "... has any extension parameter ... more than once": declined or failed.
        if seen.iter().any(|s| s.eq_ignore_ascii_case(&name)) {
            return Err(format!("{name} given twice"));
        }
        let flag = |v: &Option<String>| match v {
            None => Ok(true),
            Some(_) => Err(format!("{name} takes no value")),
        };
        match name.as_str() {
            "server_no_context_takeover" => p.server_no_context_takeover = flag(value)?,
            "client_no_context_takeover" => p.client_no_context_takeover = flag(value)?,
            "server_max_window_bits" => {
                p.server_max_window_bits = Some(window_bits(value.as_deref())?);
            }
            "client_max_window_bits" => {
                p.client_max_window_bits = Some(match value {
                    // "This parameter has no value or a decimal integer value" in an
                    // offer; an answer must give the value.
                    None if in_offer => None,
                    v => Some(window_bits(v.as_deref())?),
                });
            }
            _ => return Err(format!("unknown parameter {name}")),
        }
        seen.push(match name.as_str() {
            "server_no_context_takeover" => "server_no_context_takeover",
            "client_no_context_takeover" => "client_no_context_takeover",
            "server_max_window_bits" => "server_max_window_bits",
            _ => "client_max_window_bits",
        });
    }
    Ok(p)
}

fn element(params: Vec<(&str, Option<String>)>) -> ExtensionOffer {
    ExtensionOffer {
        name: NAME.to_owned(),
        params: params.into_iter().map(|(n, v)| (n.to_owned(), v)).collect(),
    }
}

/// The server's side: the first acceptable permessage-deflate offer among `offers` (in
/// the client's order of preference), with the answer to send. Offers that break the
/// grammar are declined ("the server MUST decline an extension negotiation offer" with
/// an unknown, repeated or invalid parameter), and so is the whole extension when none
/// is acceptable: the connection goes on without it.
pub fn negotiate(
    offers: &[ExtensionOffer],
    ours: &DeflateConfig,
) -> Option<(Params, ExtensionOffer)> {
    offers
        .iter()
        .filter(|o| o.name.eq_ignore_ascii_case(NAME))
        .find_map(|o| answer(&parse(o, true).ok()?, ours))
}

fn answer(offer: &Parsed, ours: &DeflateConfig) -> Option<(Params, ExtensionOffer)> {
    let mut reply = Vec::new();
    // Our compressor: the client may cap its window and ask for resets; we may reset on
    // our own and say so.
    let server_reset = offer.server_no_context_takeover || ours.no_context_takeover;
    if server_reset {
        reply.push(("server_no_context_takeover", None));
    }
    let mut server_bits = ours.max_window_bits.clamp(8, 15);
    if let Some(cap) = offer.server_max_window_bits {
        server_bits = server_bits.min(cap);
        reply.push(("server_max_window_bits", Some(server_bits.to_string())));
    } else if server_bits < 15 {
        // A smaller window than the client expects is always within what it can read.
        reply.push(("server_max_window_bits", Some(server_bits.to_string())));
    }
    // The client's compressor: we may ask for resets at any time; a smaller window only
    // when the client said it can ("if a received offer doesn't have the
    // client_max_window_bits parameter, the response MUST NOT include" it).
    // An offered client_no_context_takeover is only a hint: the client resets only if
    // the answer says so. Said whenever offered (the client wants it) or wanted.
    let client_reset = offer.client_no_context_takeover || ours.request_peer_no_context_takeover;
    if client_reset {
        reply.push(("client_no_context_takeover", None));
    }
    let mut client_bits = match offer.client_max_window_bits {
        Some(Some(n)) => n,
        _ => 15,
    };
    if let Some(offered) = offer.client_max_window_bits {
        if let Some(want) = ours.request_peer_max_window_bits {
            client_bits = client_bits.min(want.clamp(8, 15));
        }
        if offered.is_some() || client_bits < 15 {
            reply.push(("client_max_window_bits", Some(client_bits.to_string())));
        }
    }
    let params = Params {
        server_no_context_takeover: server_reset,
        client_no_context_takeover: client_reset,
        server_max_window_bits: server_bits,
        client_max_window_bits: client_bits,
    };
    Some((params, element(reply)))
}

/// The client's side: the offer to send.
pub fn offer(ours: &DeflateConfig) -> ExtensionOffer {
    let mut params = Vec::new();
    if ours.request_peer_no_context_takeover {
        params.push(("server_no_context_takeover", None));
    }
    if ours.no_context_takeover {
        params.push(("client_no_context_takeover", None));
    }
    if let Some(bits) = ours.request_peer_max_window_bits {
        params.push((
            "server_max_window_bits",
            Some(bits.clamp(8, 15).to_string()),
        ));
    }
    // We can compress with any window the server asks for.
    params.push((
        "client_max_window_bits",
        (ours.max_window_bits < 15).then(|| ours.max_window_bits.clamp(8, 15).to_string()),
    ));
    element(params)
}

/// The client's side: what the server's answer (one accepted `permessage-deflate`
/// element) agrees to, checked against the offer `ours` made.
pub fn accepted(answer: &ExtensionOffer, ours: &DeflateConfig) -> Result<Params, NegotiationError> {
    let a = parse(answer, false).map_err(NegotiationError::Invalid)?;
    if ours.request_peer_no_context_takeover && !a.server_no_context_takeover {
        return Err(NegotiationError::Mismatch(
            "server_no_context_takeover was asked for and not accepted",
        ));
    }
    if let (Some(asked), Some(got)) = (ours.request_peer_max_window_bits, a.server_max_window_bits)
        && got > asked
    {
        return Err(NegotiationError::Mismatch(
            "server_max_window_bits larger than offered",
        ));
    }
    if ours.request_peer_max_window_bits.is_some() && a.server_max_window_bits.is_none() {
        return Err(NegotiationError::Mismatch(
            "server_max_window_bits was asked for and not accepted",
        ));
    }
    let ours_bits = ours.max_window_bits.clamp(8, 15);
    let client_bits = match a.client_max_window_bits {
        Some(Some(n)) if ours_bits < 15 && n > ours_bits => {
            return Err(NegotiationError::Mismatch(
                "client_max_window_bits larger than offered",
            ));
        }
        Some(Some(n)) => n,
        _ => ours_bits,
    };
    Ok(Params {
        server_no_context_takeover: a.server_no_context_takeover,
        client_no_context_takeover: a.client_no_context_takeover || ours.no_context_takeover,
        server_max_window_bits: a.server_max_window_bits.unwrap_or(15),
        client_max_window_bits: client_bits,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(params: &[(&str, Option<&str>)]) -> ExtensionOffer {
        ExtensionOffer {
            name: NAME.into(),
            params: params
                .iter()
                .map(|(n, v)| (n.to_string(), v.map(str::to_owned)))
                .collect(),
        }
    }

    #[test]
    fn a_server_takes_each_parameter_as_the_rfc_says() {
        let ours = DeflateConfig::default();
        // The plain offer: the plain answer, full windows, contexts kept.
        let (p, a) = negotiate(&[ext(&[])], &ours).unwrap();
        assert_eq!(a.to_string(), "permessage-deflate");
        assert_eq!(
            (p.server_max_window_bits, p.client_max_window_bits),
            (15, 15)
        );
        // Every parameter offered is answered.
        let offer = ext(&[
            ("server_no_context_takeover", None),
            ("client_no_context_takeover", None),
            ("server_max_window_bits", Some("10")),
            ("client_max_window_bits", None),
        ]);
        let (p, a) = negotiate(&[offer], &ours).unwrap();
        assert!(p.server_no_context_takeover && p.client_no_context_takeover);
        assert_eq!(p.server_max_window_bits, 10);
        assert_eq!(
            a.to_string(),
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=10; client_no_context_takeover"
        );
        // client_max_window_bits with a value is echoed.
        let (p, a) = negotiate(&[ext(&[("client_max_window_bits", Some("9"))])], &ours).unwrap();
        assert_eq!(p.client_max_window_bits, 9);
        assert_eq!(
            a.to_string(),
            "permessage-deflate; client_max_window_bits=9"
        );
    }

    #[test]
    fn a_server_declines_bad_offers_and_takes_the_next() {
        let ours = DeflateConfig::default();
        for bad in [
            ext(&[("server_max_window_bits", Some("7"))]),
            ext(&[("server_max_window_bits", Some("16"))]),
            ext(&[("server_max_window_bits", Some("010"))]),
            ext(&[("server_max_window_bits", None)]),
            ext(&[("client_max_window_bits", Some("x"))]),
            ext(&[("server_no_context_takeover", Some("1"))]),
            ext(&[("mystery", None)]),
            ext(&[
                ("client_no_context_takeover", None),
                ("client_no_context_takeover", None),
            ]),
        ] {
            assert_eq!(negotiate(std::slice::from_ref(&bad), &ours), None, "{bad}");
            let (_, a) = negotiate(&[bad.clone(), ext(&[])], &ours).unwrap();
            assert_eq!(a.to_string(), "permessage-deflate", "after {bad}");
        }
        let other = ExtensionOffer {
            name: "x-webkit-deflate-frame".into(),
            params: vec![],
        };
        assert_eq!(negotiate(&[other], &ours), None);
    }

    #[test]
    fn a_server_asks_what_its_config_wants_within_the_rules() {
        let ours = DeflateConfig {
            max_window_bits: 11,
            no_context_takeover: true,
            request_peer_no_context_takeover: true,
            request_peer_max_window_bits: Some(10),
            ..DeflateConfig::default()
        };
        // The client said nothing of its window: it may not be capped.
        let (p, a) = negotiate(&[ext(&[])], &ours).unwrap();
        assert_eq!(
            a.to_string(),
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=11; client_no_context_takeover"
        );
        assert_eq!(p.client_max_window_bits, 15);
        let (p, a) = negotiate(&[ext(&[("client_max_window_bits", None)])], &ours).unwrap();
        assert_eq!(p.client_max_window_bits, 10);
        assert!(a.to_string().ends_with("client_max_window_bits=10"), "{a}");
    }

    #[test]
    fn a_client_checks_the_answer_against_its_offer() {
        let ours = DeflateConfig {
            request_peer_max_window_bits: Some(10),
            request_peer_no_context_takeover: true,
            ..DeflateConfig::default()
        };
        assert_eq!(
            offer(&ours).to_string(),
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=10; client_max_window_bits"
        );
        let good = ext(&[
            ("server_no_context_takeover", None),
            ("server_max_window_bits", Some("9")),
            ("client_max_window_bits", Some("12")),
        ]);
        let p = accepted(&good, &ours).unwrap();
        assert_eq!(
            (p.server_max_window_bits, p.client_max_window_bits),
            (9, 12)
        );
        assert!(p.server_no_context_takeover);
        for bad in [
            ext(&[("server_max_window_bits", Some("9"))]),
            ext(&[
                ("server_no_context_takeover", None),
                ("server_max_window_bits", Some("11")),
            ]),
            ext(&[
                ("server_no_context_takeover", None),
                ("server_max_window_bits", Some("9")),
                ("client_max_window_bits", None),
            ]),
            ext(&[
                ("server_no_context_takeover", None),
                ("server_max_window_bits", Some("9")),
                ("x", None),
            ]),
        ] {
            assert!(accepted(&bad, &ours).is_err(), "{bad}");
        }
    }
}
