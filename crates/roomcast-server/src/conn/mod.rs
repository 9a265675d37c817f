//! Connections: from accept to the endpoint that serves them. The drivers here read and
//! answer; what a connection shares with its worker (its outbox, its session) is the
//! worker's ([`crate::worker::Conn`]).

pub(crate) mod accept;
mod admit;
mod h2;
mod proxy;
mod raw;
pub(crate) mod run;
mod ws;
