//! A blocking connection to the server: tokio-postgres driven by a runtime of its
//! own, as the `postgres` crate's `Client` is, with one difference that crate cannot
//! give: the whole connection start-up (TCP connect, the TLS request and handshake,
//! authentication) is bounded by one deadline. tokio-postgres's `connect_timeout`
//! bounds only the TCP connect, so a port that accepts and never answers (a hung
//! server or pooler, another service's port) made an open wait forever (red12).

use std::collections::HashMap;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::task::{Context, Poll};
use std::time::Duration;

use postgres::types::{ToSql, Type};
use postgres::{Row, SimpleQueryMessage};
use tokio::runtime::Runtime;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{AsyncMessage, Error, Socket, Statement};

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
    /// The statements prepared on this connection at the protocol level (Parse once,
    /// then Bind and Execute), by text, and the mark set in the server session they
    /// were prepared in; `None` until the first are. Per connection: a new one (after
    /// a reconnect) starts with none.
    prepared: Option<Prepared>,
}

/// See [`Client::prepared`].
struct Prepared {
    mark: String,
    statements: HashMap<String, Statement>,
}

/// One request of a pipeline ([`Client::pipeline`]).
pub(crate) enum Request<'a> {
    /// A simple query (its rows are not kept).
    Simple(&'a str),
    /// Bind and Execute of a statement prepared on this connection, with these
    /// parameters.
    Bound(&'a Statement, &'a [&'a (dyn ToSql + Sync)]),
}

/// A future of a request, boxed so that different kinds go in one list.
type Pending<'a, T> = Pin<Box<dyn Future<Output = Result<T, Error>> + 'a>>;

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
            prepared: None,
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
            ..
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

    /// The mark of the server session this connection's statements were prepared
    /// in, `None` before any was (see `Remote::lock_protocol`).
    pub(crate) fn mark(&self) -> Option<&str> {
        self.prepared.as_ref().map(|p| p.mark.as_str())
    }

    /// Whether a statement of this text is prepared on this connection.
    pub(crate) fn holds(&self, text: &str) -> bool {
        self.prepared
            .as_ref()
            .is_some_and(|p| p.statements.contains_key(text))
    }

    /// Records that this connection's server session now carries `mark`; the
    /// statements prepared from now on are taken to be in it.
    pub(crate) fn set_mark(&mut self, mark: String) {
        self.prepared = Some(Prepared {
            mark,
            statements: HashMap::new(),
        });
    }

    /// The statements of these texts and parameter types, each prepared on this
    /// connection at its first use (a `Parse` of a statement named by the client
    /// library, all the missing ones pipelined in one round trip) and kept for the
    /// connection's life. Called only once a mark is set ([`Client::set_mark`]).
    pub(crate) fn prepared(&mut self, wanted: &[(&str, &[Type])]) -> Result<Vec<Statement>, Error> {
        let have = &self
            .prepared
            .as_ref()
            .expect("invariant: statements are prepared after the mark is set")
            .statements;
        let missing: Vec<(&str, &[Type])> = wanted
            .iter()
            .filter(|(text, _)| !have.contains_key(*text))
            .copied()
            .collect();
        if !missing.is_empty() {
            let asked = &missing;
            let made = self.run(|c| async move {
                let futures: Vec<Pending<'_, Statement>> = asked
                    .iter()
                    .map(|&(text, types)| Box::pin(c.prepare_typed(text, types)) as Pending<'_, _>)
                    .collect();
                in_order(futures)
                    .await
                    .into_iter()
                    .collect::<Result<Vec<_>, Error>>()
            })?;
            let have = &mut self
                .prepared
                .as_mut()
                .expect("invariant: statements are prepared after the mark is set")
                .statements;
            for ((text, _), statement) in missing.iter().zip(made) {
                have.insert((*text).to_string(), statement);
            }
        }
        let have = &self
            .prepared
            .as_ref()
            .expect("invariant: statements are prepared after the mark is set")
            .statements;
        Ok(wanted.iter().map(|(text, _)| have[*text].clone()).collect())
    }

    /// Sends the requests one after the other without waiting for an answer in
    /// between (the server runs them in order; each bound statement ends with its
    /// own `Sync`), then reads every answer: one round trip. The rows of each, or the
    /// first error with the index of its request (the later requests of a
    /// transaction block fail once one has: `25P02`).
    pub(crate) fn pipeline(
        &mut self,
        requests: &[Request<'_>],
    ) -> Result<Vec<Vec<Row>>, (usize, Error)> {
        let answers = self.run(|c| async move {
            let futures: Vec<Pending<'_, Vec<Row>>> = requests
                .iter()
                .map(|request| match *request {
                    Request::Simple(query) => {
                        Box::pin(async move { c.batch_execute(query).await.map(|()| Vec::new()) })
                            as Pending<'_, _>
                    }
                    Request::Bound(statement, params) => Box::pin(c.query(statement, params)),
                })
                .collect();
            Ok(in_order(futures).await)
        });
        let answers = answers.map_err(|e| (0, e))?;
        answers
            .into_iter()
            .enumerate()
            .map(|(i, a)| a.map_err(|e| (i, e)))
            .collect()
    }

    /// Whether the connection has ended (the server closed it, or it failed).
    pub(crate) fn is_closed(&self) -> bool {
        self.client
            .as_ref()
            .is_none_or(tokio_postgres::Client::is_closed)
    }
}

/// Polls every future, always in the list's order, until all are done: each sends
/// its request when first polled, so the requests go out in that order.
async fn in_order<T>(mut futures: Vec<Pending<'_, T>>) -> Vec<Result<T, Error>> {
    let mut done: Vec<Option<Result<T, Error>>> = futures.iter().map(|_| None).collect();
    poll_fn(|cx| {
        let mut pending = false;
        for (future, slot) in futures.iter_mut().zip(done.iter_mut()) {
            if slot.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(answer) => *slot = Some(answer),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    done.into_iter()
        .map(|d| d.expect("invariant: every future is done"))
        .collect()
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
