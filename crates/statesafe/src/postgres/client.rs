//! A blocking connection to the server: tokio-postgres driven by a runtime of its
//! own, as the `postgres` crate's `Client` is, with one difference that crate cannot
//! give: the whole connection start-up (TCP connect, the TLS request and handshake,
//! authentication) is bounded by one deadline. tokio-postgres's `connect_timeout`
//! bounds only the TCP connect, so a port that accepts and never answers (a hung
//! server or pooler, another service's port) made an open wait forever (red12).

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::task::{Context, Poll};
use std::time::Duration;

use postgres::types::{ToSql, Type};
use postgres::{Row, SimpleQueryMessage};
use tokio::runtime::Runtime;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{AsyncMessage, Error, Socket};

/// What the connection's task yields: the server's asynchronous messages (notices),
/// its error, or its end.
type Messages =
    Box<dyn FnMut(&mut Context<'_>) -> Poll<Option<Result<AsyncMessage, Error>>> + Send>;

/// One connection to the server, used by one thread at a time.
pub(crate) struct Client {
    runtime: Runtime,
    /// `None` once closed (in `drop`).
    client: Option<tokio_postgres::Client>,
    connection: Messages,
}

/// Why a connection could not be made.
pub(crate) enum ConnectError {
    /// The server refused, or the connection failed.
    Failed(Error),
    /// The start-up did not finish within this time.
    TimedOut(Duration),
    /// This process could not make the runtime that drives the connection.
    Runtime(std::io::Error),
}

impl Client {
    /// Connects, the whole start-up within `limit`.
    pub(crate) fn connect<T>(
        config: &tokio_postgres::Config,
        tls: T,
        limit: Duration,
    ) -> Result<Client, ConnectError>
    where
        T: MakeTlsConnect<Socket> + 'static + Send,
        T::TlsConnect: Send,
        T::Stream: Send,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ConnectError::Runtime)?;
        // The timer is made inside the runtime (it needs its clock).
        let connected =
            runtime.block_on(async { tokio::time::timeout(limit, config.connect(tls)).await });
        let (client, mut connection) = match connected {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => return Err(ConnectError::Failed(e)),
            // The start-up's future is dropped: its socket is closed.
            Err(_) => return Err(ConnectError::TimedOut(limit)),
        };
        Ok(Client {
            runtime,
            client: Some(client),
            connection: Box::new(move |cx| connection.poll_message(cx)),
        })
    }

    /// Runs `request` to its end while driving the connection (as the `postgres`
    /// crate does): a notice is logged; an error of the connection itself (the
    /// server's `FATAL`, a lost socket) is the request's error.
    fn run<'c, R, F>(
        &'c mut self,
        request: impl FnOnce(&'c tokio_postgres::Client) -> F,
    ) -> Result<R, Error>
    where
        F: Future<Output = Result<R, Error>>,
    {
        let Client {
            runtime,
            client,
            connection,
        } = self;
        let client = client
            .as_ref()
            .expect("invariant: a client is open until it is dropped");
        let mut request = pin!(request(client));
        runtime.block_on(poll_fn(|cx| {
            loop {
                match connection(cx) {
                    Poll::Ready(Some(Ok(AsyncMessage::Notice(notice)))) => {
                        tracing::info!(target: "statesafe", "{}: {}", notice.severity(), notice.message());
                    }
                    Poll::Ready(Some(Ok(_))) => {}
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                    Poll::Ready(None) | Poll::Pending => break,
                }
            }
            request.as_mut().poll(cx)
        }))
    }

    pub(crate) fn simple_query(&mut self, query: &str) -> Result<Vec<SimpleQueryMessage>, Error> {
        self.run(|c| c.simple_query(query))
    }

    pub(crate) fn batch_execute(&mut self, query: &str) -> Result<(), Error> {
        self.run(|c| c.batch_execute(query))
    }

    pub(crate) fn query_typed(
        &mut self,
        query: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Vec<Row>, Error> {
        self.run(|c| c.query_typed(query, params))
    }

    pub(crate) fn query_typed_one(
        &mut self,
        query: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Row, Error> {
        self.run(|c| c.query_typed_one(query, params))
    }

    pub(crate) fn query_typed_opt(
        &mut self,
        query: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Option<Row>, Error> {
        self.run(|c| c.query_typed_opt(query, params))
    }

    pub(crate) fn execute_typed(
        &mut self,
        query: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<u64, Error> {
        self.run(|c| c.execute_typed(query, params))
    }

    /// Whether the connection has ended (the server closed it, or it failed).
    pub(crate) fn is_closed(&self) -> bool {
        self.client
            .as_ref()
            .is_none_or(tokio_postgres::Client::is_closed)
    }
}

impl Drop for Client {
    /// Ends the session as the `postgres` crate does: the client's end tells the
    /// connection to send `Terminate` and close.
    fn drop(&mut self) {
        drop(self.client.take());
        let connection = &mut self.connection;
        // Until it ends, or fails (a connection that failed yields nothing more).
        self.runtime.block_on(poll_fn(|cx| {
            loop {
                match connection(cx) {
                    Poll::Ready(Some(Ok(_))) => {}
                    Poll::Ready(Some(Err(_)) | None) => return Poll::Ready(()),
                    Poll::Pending => return Poll::Pending,
                }
            }
        }));
    }
}
