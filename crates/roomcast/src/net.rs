//! How the CLI reaches a server: `ws://` over TCP, `wss://` and `https://` over rustls,
//! trusting the system's roots, or only `--cacert FILE`, or (`--insecure`) anything.
//! With `--http2` the WebSocket is a stream of an HTTP/2 connection (RFC 8441), which
//! hyper's client drives.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::{Method, Request};
use http_body_util::Empty;
use hyper::upgrade::Upgraded;
use hyper_util::rt::{TokioExecutor, TokioIo};
use roomcast_ws::handshake::{ClientHandshake, ClientOptions, PROTOCOL, ServerAnswer};
use roomcast_ws::tokio::{
    Error, Target, WebSocket, WebSocketConfig, client_handshake, offer_options, open_client,
};
use rustls::ClientConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_util::either::Either;

/// Whom a `wss://` or `https://` server must be vouched for by.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct TlsArgs {
    /// For wss:// and https://: trust the certificates in this PEM file instead of the
    /// system's roots (a self-signed server's own certificate, a private CA).
    #[arg(long, value_name = "FILE", global = true)]
    pub cacert: Option<PathBuf>,
    /// For wss:// and https://: do not check the server's certificate at all (testing
    /// only: anyone on the path can read and change the traffic).
    #[arg(long, global = true)]
    pub insecure: bool,
}

impl TlsArgs {
    /// The rustls client configuration these flags ask for.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let config = if self.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
                .with_no_client_auth()
        } else {
            let mut roots = rustls::RootCertStore::empty();
            match &self.cacert {
                Some(path) => {
                    let certs = CertificateDer::pem_file_iter(path)
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                    for cert in certs {
                        let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
                        roots
                            .add(cert)
                            .map_err(|e| format!("{}: {e}", path.display()))?;
                    }
                    if roots.is_empty() {
                        return Err(format!("{}: no certificate in the file", path.display()));
                    }
                }
                None => {
                    let found = rustls_native_certs::load_native_certs();
                    for cert in found.certs {
                        let _ = roots.add(cert);
                    }
                    if roots.is_empty() {
                        return Err("no system root certificates found: give --cacert FILE".into());
                    }
                }
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        Ok(Arc::new(config))
    }
}

/// Accepts every certificate (`--insecure`); signatures are still checked, so the
/// handshake itself stays well-formed.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A connection to a server: plain TCP (`ws://`), or TLS over it (`wss://`).
pub type Socket = Either<TcpStream, Box<tokio_rustls::client::TlsStream<TcpStream>>>;

/// What a WebSocket runs on: a connection of its own, or a stream of an HTTP/2 one.
pub type Stream = Either<Socket, TokioIo<Upgraded>>;

/// Connects to a `ws://` or `wss://` URL and runs the opening handshake (an HTTP/1.1
/// upgrade, or with `http2` an extended CONNECT), all within the handshake timeout.
pub async fn connect(
    url: &str,
    options: &ClientOptions,
    config: WebSocketConfig,
    tls: &TlsArgs,
    http2: bool,
) -> Result<(WebSocket<Stream>, ServerAnswer), Error> {
    let t = Target::parse(url)?;
    let timeout = config.handshake_timeout;
    let open = async {
        let tcp = TcpStream::connect((t.host.as_str(), t.port)).await?;
        tcp.set_nodelay(true)?;
        if !t.secure {
            return Ok::<_, Error>(Either::Left(tcp));
        }
        let client = tls
            .client_config()
            .map_err(|e| Error::Io(io::Error::other(e)))?;
        let name = ServerName::try_from(t.host.clone())
            .map_err(|_| Error::Url("not a host name or address"))?;
        secure(tcp, client, name, http2).await
    };
    let stream = tokio::time::timeout(timeout, open)
        .await
        .map_err(|_| Error::Timeout("TCP connect and TLS handshake"))??;
    if http2 {
        let opening = connect_h2(stream, &t, options, config);
        return tokio::time::timeout(timeout, opening)
            .await
            .map_err(|_| Error::Timeout("HTTP/2 extended CONNECT"))?;
    }
    let (ws, answer) =
        client_handshake(Either::Left(stream), &t.authority, &t.path, options, config).await?;
    Ok((ws, answer))
}

/// TLS over `tcp` to `name`; with `h2`, ALPN offers only `h2` and the server must choose
/// it.
pub async fn secure(
    tcp: TcpStream,
    mut config: Arc<ClientConfig>,
    name: ServerName<'static>,
    h2: bool,
) -> Result<Socket, Error> {
    if h2 {
        Arc::make_mut(&mut config).alpn_protocols = vec![b"h2".to_vec()];
    }
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await?;
    if h2 && stream.get_ref().1.alpn_protocol() != Some(b"h2") {
        return Err(other("the server did not choose HTTP/2 (ALPN h2)"));
    }
    Ok(Either::Right(Box::new(stream)))
}

fn other(e: impl ToString) -> Error {
    Error::Io(io::Error::other(e.to_string()))
}

/// An HTTP/2 connection over `socket` (hyper's client, its task spawned), and on it an
/// extended CONNECT with `:protocol = websocket` (RFC 8441 section 4): its 200 checked,
/// its stream the WebSocket's.
async fn connect_h2(
    socket: Socket,
    t: &Target,
    options: &ClientOptions,
    config: WebSocketConfig,
) -> Result<(WebSocket<Stream>, ServerAnswer), Error> {
    let mut sender = h2_handshake(socket).await?;
    let scheme = if t.secure { "https" } else { "http" };
    h2_websocket(&mut sender, scheme, &t.authority, &t.path, options, config).await
}

/// The client half of an HTTP/2 connection: what sends its requests.
pub type H2Sender = hyper::client::conn::http2::SendRequest<Empty<Bytes>>;

/// Starts HTTP/2 on `socket` (the preface and SETTINGS), its connection driven by a task
/// of its own.
pub async fn h2_handshake(socket: Socket) -> Result<H2Sender, Error> {
    let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake::<_, Empty<Bytes>>(TokioIo::new(socket))
        .await
        .map_err(other)?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "http/2 connection ended");
        }
    });
    Ok(sender)
}

/// Opens one WebSocket on a new stream of `sender`'s connection.
pub async fn h2_websocket(
    sender: &mut H2Sender,
    scheme: &str,
    authority: &str,
    path: &str,
    options: &ClientOptions,
    config: WebSocketConfig,
) -> Result<(WebSocket<Stream>, ServerAnswer), Error> {
    let options = offer_options(options, &config);
    let (handshake, fields) = ClientHandshake::connect(&options);
    let mut req = Request::builder()
        .method(Method::CONNECT)
        .uri(format!("{scheme}://{authority}{path}"))
        .body(Empty::<Bytes>::new())
        .map_err(other)?;
    *req.headers_mut() = fields;
    req.extensions_mut()
        .insert(hyper::ext::Protocol::from_static(PROTOCOL));
    // The server's SETTINGS must have said it takes extended CONNECT (RFC 8441 section
    // 3) before one is sent: hyper refuses the request until then.
    sender.ready().await.map_err(other)?;
    let mut resp = sender.send_request(req).await.map_err(other)?;
    let upgrade = hyper::upgrade::on(&mut resp);
    let answer = handshake
        .check_connect_response(resp.map(|_| ()))
        .map_err(Error::Response)?;
    let stream = upgrade.await.map_err(other)?;
    let ws = open_client(
        Either::Right(TokioIo::new(stream)),
        &answer,
        config,
        BytesMut::new(),
    )?;
    Ok((ws, answer))
}
