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
//! One module per concept (a test checks that this table names every module
//! under `src/` and nothing else):
//!
//! | module | what lives there |
//! |---|---|
//! | [`admin`] | the Icecast-compatible endpoints: title updates (/admin/metadata, admin.cgi), /admin/streamlist.txt, /status-json.xsl |
//! | [`config`] | settings from the command line, the TOML file and the environment → one validated [`config::Config`] |
//! | [`credentials`] | the credential store: users, roles per mount, plain and bcrypt passwords checked off the shards |
//! | [`server`] | start-up (limits, listen sockets, privileges), signals, reload, shutdown, the panic policy |
//! | [`shared`] | server-wide state every shard and the main thread share ([`shared::ServerShared`]) |
//! | [`shard`] | one glommio executor per core: accept loop, request tasks, the engine loop |
//! | [`wait`] | wait sets: how a task waits for an event on its shard (one waker clone per wait) |
//! | [`destination`] | push destinations: a stream pushed on to other servers, each with its thread and runtime status |
//! | [`engine`] | the shard's listener table grouped by stream, delivery passes, when to send (adaptive gathering), the kernel queue bound |
//! | [`listener`] | one listener's compact record and the state machine of its vectored sends (whole frames, laps, copies) |
//! | [`readiness`] | the shard's epoll set of listener sockets and the thread that wakes the shard |
//! | [`stream`] | one stream's shared state: ring, headers, source state, listener count, how far listeners keep from the writer, the shards' bells |
//! | [`source`] | the source thread: open / read / reopen with backoff / close-idle / quiet kill / pacing |
//! | [`demo`] | the built-in test-tone stream used when no source is given |
//! | [`framing`] | framers (raw, mp3 with tag skipping, AAC ADTS, Ogg pages with header capture) that cut bytes into whole frames |
//! | [`metadata`] | in-band titles: ICY metadata blocks built for listeners and stripped from upstreams, a stream's title board |
//! | [`pacing`] | how long a frame plays (MP3/AAC samples, Ogg granules): what paces a file read as a live stream |
//! | [`reservoir`] | clean MP3 joins and skips: the bit-reservoir lead-in |
//! | [`titles`] | titles of pipe and command streams: a title file or a title command |
//! | [`upstream`] | relays: the HTTP client that pulls a stream from an upstream (redirects, relay credentials, ICY titles) |
//! | [`ring`] | the seqlock frame ring (single writer, lock-free readers) |
//! | [`ingest`] | push ingest: the encoder handshake rules (PUT/SOURCE, Expect, content types, ice-* headers) and the chunked-body decoder |
//! | [`websocket`] | WebSocket: the handshake, message headers (one stream frame per message), client frames, the channel URL scheme |
//! | [`http`] | request parsing (httparse) and response bytes |
//! | [`stats`] | single-writer counters and the declaration of every figure |
//! | [`status`] | `/status`, `/status/clients`, `/metrics` and the HTML page, made from the declarations |
//! | [`sys`] | the unsafe system-call wrappers (sendmsg, sockets, limits, uid) |
//! | [`logger`] | the stderr logger and the log-level policy |
//! | [`failpoint`] | fault injection for the black-box tests (debug builds only) |
//!
//! `src/main.rs` only parses the command line, sets up logging and calls
//! [`server::run`]. Modules depend on each other without cycles: `config` on
//! `framing` (never the reverse), `shard` on `status` and `shared`, `status`
//! on `shared` and `stats`.

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
//! the seqlock) and small places in [`listener`] (the vectored send from
//! slots, the transport trait) and [`shard`] (adopting a listen descriptor), each with
//! a `SAFETY:` comment; `#![deny(clippy::undocumented_unsafe_blocks)]` is
//! checked by CI's clippy run.

#![deny(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]

pub mod admin;
pub mod config;
pub mod credentials;
pub mod demo;
pub mod destination;
pub mod engine;
pub mod failpoint;
pub mod framing;
pub mod http;
pub mod ingest;
pub mod listener;
pub mod logger;
pub mod metadata;
pub mod pacing;
pub mod readiness;
pub mod reservoir;
pub mod ring;
pub mod server;
pub mod shard;
pub mod shared;
pub mod source;
pub mod stats;
pub mod status;
pub mod stream;
pub mod sys;
pub mod titles;
pub mod upstream;
pub mod wait;
pub mod websocket;

#[cfg(test)]
mod layout_tests {
    /// The modules named in the `# Layout` table of this file.
    fn table() -> Vec<String> {
        include_str!("lib.rs")
            .lines()
            .filter_map(|l| l.strip_prefix("//! | [`"))
            .filter_map(|l| l.split_once("`]"))
            .map(|(name, _)| name.to_string())
            .collect()
    }

    /// The modules under `src/`: `name.rs` files and `name/mod.rs` folders.
    fn on_disk() -> Vec<String> {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&src).expect("read src/") {
            let path = entry.expect("dir entry").path();
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            let folder = path.is_dir() && path.join("mod.rs").exists();
            let file =
                path.extension().is_some_and(|e| e == "rs") && name != "lib" && name != "main";
            if folder || file {
                out.push(name);
            }
        }
        out
    }

    #[test]
    fn the_layout_table_names_every_module_and_only_those() {
        let table = table();
        let disk = on_disk();
        for m in &disk {
            assert!(
                table.contains(m),
                "src/{m} is missing from the layout table in src/lib.rs"
            );
        }
        for m in &table {
            assert!(
                disk.contains(m),
                "the layout table names `{m}`, which is not under src/"
            );
        }
        let declared: Vec<&str> = include_str!("lib.rs")
            .lines()
            .filter_map(|l| l.strip_prefix("pub mod "))
            .map(|l| l.trim_end_matches(';'))
            .collect();
        for m in &table {
            assert!(
                declared.contains(&m.as_str()),
                "`{m}` is not declared with `pub mod`"
            );
        }
    }
}
