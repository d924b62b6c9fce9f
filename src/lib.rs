//! ringcast — a live-stream fan-out server for bare-metal Linux.
//!
//! It reads one or more live streams from a pipe, file or command, cuts each
//! into whole frames, keeps them in a lock-free seqlock ring in shared memory,
//! and serves them to many thousands of HTTP listeners from one glommio
//! (io_uring) executor per core. Each listener gets all its pending frames in
//! one `sendmsg` whose iovecs point straight into the ring. Slow listeners skip
//! whole frames; nobody waits for them. Listeners stay connected while a source
//! fails and comes back.
//!
//! # Layout
//!
//! | module | what lives there |
//! |---|---|
//! | [`config`] | the streamserve-compatible command line → a validated [`config::Config`] |
//! | [`server`] | start-up (limits, listen sockets, privileges), signals, shutdown |
//! | [`stream`] | one stream's shared state: ring, header bytes, source state, client count, the shards' bells |
//! | [`source`] | the source thread: open / read / reopen with backoff / close-idle / quiet kill / pacing |
//! | [`demo`] | the built-in test-tone stream used when no source is given |
//! | [`framing`] | framers (raw, mp3 with tag skipping, AAC ADTS, Ogg pages with header capture) that cut bytes into whole frames |
//! | [`reservoir`] | clean MP3 joins and skips: the bit-reservoir lead-in |
//! | [`ring`] | the seqlock frame ring (single writer, lock-free readers) |
//! | [`shard`] | one glommio executor per core: accept loop, connection tasks, the watcher |
//! | [`client`] | one listener's position and the vectored-send hot path |
//! | [`http`] | request parsing (httparse) and response bytes |
//! | [`stats`] | single-writer counters, per shard / per stream |
//! | [`status`] | `/status`, `/status/clients`, `/metrics` and the HTML status page |
//! | [`sys`] | the unsafe system-call wrappers (sendmsg, sockets, limits, uid) |
//! | [`logger`] | the stderr logger and the log-level policy |
//!
//! `src/main.rs` only parses the command line, sets up logging and calls
//! [`server::run`].
//!
//! # Invariants (see `../shared/design.md`)
//!
//! 1. A client's body is whole frames from a frame boundary; a skip drops whole
//!    frames; a torn or truncated frame ends the client and is counted.
//! 2. Every slot is checked before and after it is sent from (seqlock).
//! 3. The source never waits for a client; a shard never blocks on one.
//! 4. With `-reopen`, clients stay connected while the source comes back.
//! 5. Memory is fixed by the configuration: rings are mapped once, per-client
//!    state is small and bounded.
//! 6. No input — request, media bytes, flag, command — panics the server.
//!
//! # Unsafe code
//!
//! `unsafe` lives in [`sys`] (system calls), [`ring`] (the shared mapping and
//! the seqlock) and two small places in [`client`] / [`shard`] (pointer
//! offsets into a slot, adopting a listen descriptor), each with a `SAFETY:`
//! comment.

#![deny(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]

pub mod client;
pub mod config;
pub mod demo;
pub mod failpoint;
pub mod framing;
pub mod http;
pub mod logger;
pub mod reservoir;
pub mod ring;
pub mod server;
pub mod shard;
pub mod source;
pub mod stats;
pub mod status;
pub mod stream;
pub mod sys;
pub mod wait;
