//! OAuth 2.1 (issue 23, being built): the authorization server's state lives in the executor,
//! which alone mints, stores (as digests), checks and revokes codes and tokens. So far, each
//! with unit tests that attack it: the text helpers ([`text`]), the requests waiting for a
//! person ([`pending`]), the authorization codes ([`codes`]) and the grants with their
//! rotating tokens ([`grants`]).

#![allow(dead_code)] // Wired into dispatch when the authorization server is.

pub(crate) mod codes;
pub(crate) mod grants;
pub(crate) mod pending;
pub(crate) mod text;
