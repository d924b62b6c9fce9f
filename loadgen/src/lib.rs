//! loadgen: a load generator and checker for HTTP live-stream fan-out servers.
//!
//! `loadgen source` writes a paced test stream whose frames carry a sequence number, a
//! send time and a checksum; `loadgen clients` opens thousands of HTTP clients on one
//! thread and checks every frame they receive: corruption, skipped frames, and delivery
//! latency. It measures ringcast, streamserve, Icecast or any server that relays a byte
//! stream over a close-delimited, sized or chunked HTTP/1.1 response.
//!
//! # Layout
//!
//! - [`frame`]: the test-stream frame format: encode, verify, and a streaming
//!   [`frame::Checker`] with fixed-size state. ringcast's tests use it to check bodies.
//! - [`source`]: `loadgen source`: frames paced against absolute deadlines.
//! - [`clients`]: `loadgen clients`: the single-threaded epoll client engine.
//! - [`http`]: URLs, the GET request, response heads, chunked decoding.
//! - [`icy`]: `--icy`: ICY metadata blocks split from the audio and checked.
//! - [`ws`]: `--websocket`: the RFC 6455 handshake and a streaming parser of server frames.
//! - [`stats`]: histograms and the [`stats::Report`] written as JSON and as a summary.
//! - [`parse`]: command-line value parsers (durations, `--mix`, address ranges).
//! - [`sys`]: every `unsafe` libc call (epoll, sockets, rlimits, rusage, signals).
//!
//! # Limits it sets and needs
//!
//! `clients` raises its own RLIMIT_NOFILE to N + 64 (failing with the current hard
//! limit in the message when it cannot) and spreads connections over source addresses
//! 127.0.0.2-127.0.0.250 when every target is on loopback, so 10,000+ connections never
//! run out of ephemeral ports.

#![deny(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

pub mod clients;
pub mod frame;
pub mod http;
pub mod icy;
pub mod parse;
pub mod source;
pub mod stats;
pub mod sys;
pub mod ws;
