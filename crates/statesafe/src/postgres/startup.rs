//! The start of a TCP connection: the TLS request as `sslmode` says, done here rather
//! than by the client library, so that every byte the server sends until it has
//! authenticated the client passes through [`Guard`], which refuses to answer a
//! request for the password in clear text or as MD5 unless the connection is TLS
//! with a verified certificate (review19).
//!
//! Why: whatever listens at the URL's address may ask for the password, and the
//! client library answers a clear-text request (`AuthenticationCleartextPassword`)
//! with the password itself and an MD5 one with a hash that is as good as the
//! password for MD5 authentication, over plain TCP or TLS to a server it did not
//! verify, as libpq does by default. A local user who binds `127.0.0.1:5432` while
//! the server is down collects the password of every client that connects meanwhile.
//! SCRAM (`scram-sha-256`, PostgreSQL's default since 14) proves the password without
//! sending it, and is answered as before, over TLS or not.
//!
//! The client library is told `sslmode=require` with `sslnegotiation=direct`, so it
//! hands the fresh socket to this connector at once; the connector then makes the
//! `SSLRequest` itself (or, for the URL's `sslnegotiation=direct`, starts TLS at
//! once) and gives back the socket, TLS or plain, wrapped in a [`Guard`].

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_postgres::Socket;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use tokio_postgres_rustls::MakeRustlsConnect;

type RustlsConnect = <MakeRustlsConnect as MakeTlsConnect<Socket>>::TlsConnect;
type RustlsStream = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream;

/// Whether TLS is asked for before the start-up.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Negotiate {
    /// `sslmode=disable`: plain.
    Never,
    /// `allow`, `prefer`: TLS if the server answers the request with `S`.
    IfOffered,
    /// `require`, `verify-ca`, `verify-full`: TLS, or no connection.
    Always,
    /// `sslnegotiation=direct`: the TLS handshake at once, no request (PostgreSQL 17).
    Direct,
}

/// How the server's certificate is checked, as far as the password is concerned.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Certificate {
    /// Signed by a trusted root (`verify-ca`, `verify-full`, `require` with
    /// `sslrootcert`): a clear-text or MD5 request inside such TLS is answered.
    Verified,
    /// Not checked (`prefer`, `require`): anyone may present one.
    Unverified,
}

/// The connector for TCP hosts (see the module's documentation).
#[derive(Clone)]
pub(crate) struct Guarded {
    negotiate: Negotiate,
    /// `None` for [`Negotiate::Never`].
    tls: Option<MakeRustlsConnect>,
    certificate: Certificate,
}

impl Guarded {
    pub(crate) fn new(
        negotiate: Negotiate,
        tls: Option<MakeRustlsConnect>,
        certificate: Certificate,
    ) -> Guarded {
        Guarded {
            negotiate: if tls.is_none() {
                Negotiate::Never
            } else {
                negotiate
            },
            tls,
            certificate,
        }
    }
}

/// The refusal, as the source of the connection's I/O error: [`refused`] finds it.
#[derive(Debug)]
pub(crate) struct PasswordRefused {
    /// The host the server was reached at.
    pub host: String,
    /// `clear text` or `MD5`.
    pub method: &'static str,
    /// Whether the connection was TLS (with a certificate not verified).
    pub tls: bool,
}

impl std::fmt::Display for PasswordRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the server at `{}` asked for the password in {} over {}; statesafe did not send it",
            self.host,
            self.method,
            if self.tls {
                "TLS whose certificate was not verified"
            } else {
                "a connection without TLS"
            }
        )
    }
}

impl std::error::Error for PasswordRefused {}

/// The refusal behind a connection error, if that is what it was.
pub(crate) fn refused(e: &tokio_postgres::Error) -> Option<&PasswordRefused> {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<io::Error>()
            && let Some(refusal) = io
                .get_ref()
                .and_then(|i| i.downcast_ref::<PasswordRefused>())
        {
            return Some(refusal);
        }
        source = s.source();
    }
    None
}

/// [`Guarded`] for one host.
pub(crate) struct GuardedConnect {
    negotiate: Negotiate,
    tls: Option<RustlsConnect>,
    certificate: Certificate,
    host: String,
}

impl MakeTlsConnect<Socket> for Guarded {
    type Stream = Guard;
    type TlsConnect = GuardedConnect;
    type Error = std::convert::Infallible;

    fn make_tls_connect(&mut self, domain: &str) -> Result<GuardedConnect, Self::Error> {
        let tls = match &mut self.tls {
            Some(make) => Some(MakeTlsConnect::<Socket>::make_tls_connect(make, domain)?),
            None => None,
        };
        Ok(GuardedConnect {
            negotiate: self.negotiate,
            tls,
            certificate: self.certificate,
            host: domain.to_string(),
        })
    }
}

/// PostgreSQL's `SSLRequest`: length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

impl TlsConnect<Socket> for GuardedConnect {
    type Stream = Guard;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Guard>> + Send>>;

    fn connect(self, mut socket: Socket) -> Self::Future {
        Box::pin(async move {
            let GuardedConnect {
                negotiate,
                tls,
                certificate,
                host,
            } = self;
            let tls = match (negotiate, tls) {
                (Negotiate::Never, _) | (_, None) => None,
                (Negotiate::Direct, Some(tls)) => Some(tls),
                (negotiate, Some(tls)) => {
                    socket.write_all(&SSL_REQUEST).await?;
                    let mut answer = [0u8];
                    socket.read_exact(&mut answer).await?;
                    match (answer[0], negotiate) {
                        (b'S', _) => Some(tls),
                        (b'N', Negotiate::IfOffered) => None,
                        (b'N', _) => {
                            return Err(io::Error::other(
                                "the server does not support TLS (it declined the TLS request)",
                            ));
                        }
                        (other, _) => {
                            return Err(io::Error::other(format!(
                                "the server answered the TLS request with {other:#04x}, neither `S` nor `N`: not a PostgreSQL server, or one older than 7.0"
                            )));
                        }
                    }
                }
            };
            let (inner, verified) = match tls {
                Some(tls) => (
                    Inner::Tls(Box::new(tls.connect(socket).await?)),
                    certificate == Certificate::Verified,
                ),
                None => (Inner::Plain(socket), false),
            };
            let tls = matches!(inner, Inner::Tls(_));
            Ok(Guard {
                inner,
                watch: (!verified).then_some(Watch {
                    host,
                    tls,
                    head: [0; 9],
                    have: 0,
                    skip: 0,
                }),
            })
        })
    }
}

enum Inner {
    Plain(Socket),
    Tls(Box<RustlsStream>),
}

/// The connection's stream: the socket or TLS over it, its reads watched until the
/// server has authenticated the client (`AuthenticationOk`).
pub(crate) struct Guard {
    inner: Inner,
    /// `None` once authenticated, or over TLS with a verified certificate.
    watch: Option<Watch>,
}

/// Reads the server's messages until `AuthenticationOk`, refusing a request for the
/// password in clear text or as MD5 before any byte of it reaches the client library.
struct Watch {
    host: String,
    tls: bool,
    /// The message's type, length and (for an authentication request) its code.
    head: [u8; 9],
    have: usize,
    /// The bytes of the current message's body left to pass over.
    skip: usize,
}

enum Seen {
    More,
    Authenticated,
    Refused(&'static str),
}

impl Watch {
    fn feed(&mut self, mut bytes: &[u8]) -> Seen {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            self.head[self.have] = bytes[0];
            self.have += 1;
            bytes = &bytes[1..];
            let length = || {
                u32::from_be_bytes([self.head[1], self.head[2], self.head[3], self.head[4]])
                    as usize
            };
            match self.have {
                5 if self.head[0] != b'R' || length() < 8 => {
                    self.skip = length().saturating_sub(4);
                    self.have = 0;
                }
                9 => {
                    let code = u32::from_be_bytes([
                        self.head[5],
                        self.head[6],
                        self.head[7],
                        self.head[8],
                    ]);
                    match code {
                        0 => return Seen::Authenticated,
                        3 => return Seen::Refused("clear text"),
                        5 => return Seen::Refused("MD5"),
                        _ => {
                            self.skip = length() - 8;
                            self.have = 0;
                        }
                    }
                }
                _ => {}
            }
        }
        Seen::More
    }
}

impl AsyncRead for Guard {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(match &mut this.inner {
            Inner::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        })?;
        if let Some(watch) = &mut this.watch {
            match watch.feed(&buf.filled()[before..]) {
                Seen::More => {}
                Seen::Authenticated => this.watch = None,
                Seen::Refused(method) => {
                    // The request never reaches the client library: nothing is sent.
                    buf.set_filled(before);
                    let refusal = PasswordRefused {
                        host: watch.host.clone(),
                        method,
                        tls: watch.tls,
                    };
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        refusal,
                    )));
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Guard {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().inner {
            Inner::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Plain(s) => Pin::new(s).poll_flush(cx),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl TlsStream for Guard {
    fn channel_binding(&self) -> ChannelBinding {
        match &self.inner {
            Inner::Plain(_) => ChannelBinding::none(),
            Inner::Tls(s) => s.channel_binding(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch() -> Watch {
        Watch {
            host: "h".into(),
            tls: false,
            head: [0; 9],
            have: 0,
            skip: 0,
        }
    }

    fn auth(code: u32, body: &[u8]) -> Vec<u8> {
        let mut m = vec![b'R'];
        m.extend_from_slice(&((8 + body.len()) as u32).to_be_bytes());
        m.extend_from_slice(&code.to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn the_watch_refuses_clear_text_and_md5_however_the_bytes_are_split() {
        let notice = {
            let mut m = vec![b'N'];
            m.extend_from_slice(&9u32.to_be_bytes());
            m.extend_from_slice(b"R\0\0\0\x08");
            m
        };
        for (code, body, expect) in [
            (3, &b""[..], Some("clear text")),
            (5, &b"salt"[..], Some("MD5")),
            (0, &b""[..], None),
        ] {
            // A SASL request (passed over), a message whose body looks like a request,
            // then the request itself; fed whole and one byte at a time.
            let mut stream = auth(10, b"SCRAM-SHA-256\0\0");
            stream.extend_from_slice(&notice);
            stream.extend_from_slice(&auth(code, body));
            for chunk in [stream.len(), 1] {
                let mut w = watch();
                let mut seen = None;
                for part in stream.chunks(chunk) {
                    match w.feed(part) {
                        Seen::More => {}
                        Seen::Authenticated => {
                            seen = Some(None);
                            break;
                        }
                        Seen::Refused(m) => {
                            seen = Some(Some(m));
                            break;
                        }
                    }
                }
                assert_eq!(seen, Some(expect), "code {code}, chunks of {chunk}");
            }
        }
    }
}
