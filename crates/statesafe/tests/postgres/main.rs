//! The PostgreSQL backend against a real server (see [`cluster`]).
//!
//! `both.rs` runs one set of store behaviours against a local file and a PostgreSQL
//! state alike; `remote.rs` has what only a server has (damaged rows, altered tables,
//! unreachable servers, terminated connections, a holder killed mid-transaction).

mod both;
mod cluster;
mod history15;
mod pgfold22;
mod prepared;
mod red12;
mod red13;
mod red14;
mod red15;
mod remote;
mod review19;
mod review19c;
