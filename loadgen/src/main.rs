//! The `loadgen` command: parses flags into a validated configuration and runs it.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use loadgen::clients::{self, ClientsConfig};
use loadgen::source::{self, SourceConfig};
use loadgen::{http, parse, sys};

#[derive(Parser)]
#[command(
    name = "loadgen",
    version,
    about = "Load generator for HTTP live-stream fan-out servers"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write a paced, self-checking test stream to stdout
    /// (e.g. `ringcast -frame-bytes 1000 -exec loadgen source --frame-bytes 1000 --rate 16000`).
    Source(SourceArgs),
    /// Open N HTTP clients against one or more URLs and check what they receive.
    Clients(Box<ClientsArgs>),
}

#[derive(Args)]
struct SourceArgs {
    /// Bytes per frame, header included (at least 40); must match the server's -frame-bytes.
    #[arg(long)]
    frame_bytes: usize,
    /// Stream bytes per second (16000 = 128 kbit/s); 0 = as fast as the reader takes them.
    #[arg(long)]
    rate: u64,
    /// Stream id written into every frame.
    #[arg(long, default_value_t = 0)]
    stream_id: u32,
    /// Stop after this long (e.g. 30s, 5m); default: until the reader goes away.
    #[arg(long, value_parser = parse::duration)]
    duration: Option<Duration>,
    /// Stop after this many frames.
    #[arg(long)]
    frames: Option<u64>,
    /// Write this many bytes of stream header before the first frame (for a server run
    /// with -header-bytes).
    #[arg(long, default_value_t = 0)]
    header_bytes: usize,
}

#[derive(Args)]
struct ClientsArgs {
    /// URL to GET (http://host:port/path); repeat for several streams; client i uses
    /// URL i mod count.
    #[arg(long = "url", required = true)]
    urls: Vec<String>,
    /// Number of clients.
    #[arg(short = 'n', long = "clients")]
    n: usize,
    /// New connections per second; 0 = as fast as possible.
    #[arg(long, default_value_t = 0.0)]
    ramp: f64,
    /// Run length; the run stops by itself.
    #[arg(long, default_value = "10s", value_parser = parse::duration)]
    duration: Duration,
    /// Bytes per second for `paced` readers (the stream's rate for a real-time player).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Behaviour shares, e.g. fast=0.6,paced=0.2,stall=0.2,reconnect=0,churn=0; paced@RATE
    /// reads at RATE bytes/s. Shares are normalised. `churn` clients run short sessions back
    /// to back (head, --session-bytes of body, close, next session).
    #[arg(long, default_value = "fast=1")]
    mix: String,
    /// When `reconnect` clients reconnect, counted from their response head.
    #[arg(long, default_value = "2s", value_parser = parse::duration)]
    reconnect_after: Duration,
    /// Body bytes a `churn` session reads before it closes (0 = close after the head).
    /// Default: one frame (--frame-bytes), or 1 byte without --frame-bytes.
    #[arg(long)]
    session_bytes: Option<u64>,
    /// How `churn` sessions close: fin (shutdown, drain, close), rst (SO_LINGER 0), or
    /// mix (every other session each way).
    #[arg(long, default_value = "fin", value_parser = parse::close_mode)]
    close: clients::CloseMode,
    /// A `churn` session stays connected at least this long after its response head,
    /// reading all it gets once it has --session-bytes (0 = close as soon as it has them).
    #[arg(long, default_value = "0s", value_parser = parse::duration)]
    session_hold: Duration,
    /// Most `churn` sessions started per second over all clients, after the first -n;
    /// 0 = no limit (every slot starts its next session at once).
    #[arg(long, default_value_t = 0.0)]
    session_rate: f64,
    /// HTTP version of the requests: 1.0, 1.1, or mix (half each way, alternating in
    /// pairs, so that with --close mix every pairing of version and close occurs).
    #[arg(long, default_value = "1.1", value_parser = parse::http_version)]
    http_version: clients::HttpVersion,
    /// Ask for ICY metadata (`Icy-MetaData: 1`): the response must have `icy-metaint`;
    /// every metadata block is stripped and checked (malformed blocks are errors), titles
    /// and changes are counted, and only the audio bytes are frame-checked.
    #[arg(long)]
    icy: bool,
    /// Listen over WebSocket (RFC 6455 upgrade, random key, Sec-WebSocket-Accept checked):
    /// every binary message must be one whole frame; pings are answered, closes too.
    #[arg(long)]
    websocket: bool,
    /// Expected frame length; frames of another length count as corrupt.
    #[arg(long)]
    frame_bytes: Option<u32>,
    /// Local source addresses to rotate over, e.g. 127.0.0.2-127.0.0.250, or `none`.
    /// Default: that range when every URL is on IPv4 loopback, else none.
    #[arg(long)]
    src_ip_range: Option<String>,
    /// Time limit for connect plus the complete response head.
    #[arg(long, default_value = "5s", value_parser = parse::duration)]
    connect_timeout: Duration,
    /// Pause before a failed client connects again.
    #[arg(long, default_value = "1s", value_parser = parse::duration)]
    retry_delay: Duration,
    /// Bytes a paced client may read ahead of its rate (default max(frame-bytes, 4096)).
    #[arg(long)]
    paced_burst: Option<u64>,
    /// SO_RCVBUF for every client socket (default: kernel autotuning).
    #[arg(long)]
    rcvbuf: Option<u32>,
    /// Write every figure of the run to this JSON file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Failed clients tolerated before the exit status is 1, as a fraction of -n.
    #[arg(long, default_value_t = 0.0)]
    max_failed_fraction: f64,
    /// No progress lines on stderr.
    #[arg(long)]
    quiet: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Source(a) => run_source(a),
        Cmd::Clients(a) => run_clients(*a),
    }
}

fn run_source(a: SourceArgs) -> ExitCode {
    let cfg = SourceConfig {
        frame_bytes: a.frame_bytes,
        rate: a.rate,
        stream_id: a.stream_id,
        duration: a.duration,
        frames: a.frames,
        header_bytes: a.header_bytes,
    };
    if let Err(e) = cfg.validate() {
        eprintln!("loadgen source: {e}");
        return ExitCode::from(2);
    }
    let stop = sys::install_stop_signals();
    let mut out = sys::FdWriter(1);
    match source::run(&cfg, &mut out, stop) {
        Ok(_) => ExitCode::SUCCESS,
        // The reader went away: the normal end of a source run under a server.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen source: writing stdout: {e}");
            ExitCode::from(1)
        }
    }
}

fn clients_config(a: &ClientsArgs) -> Result<ClientsConfig, String> {
    let targets = a
        .urls
        .iter()
        .map(|u| http::parse_url(u))
        .collect::<Result<Vec<_>, _>>()?;
    let mut cfg = ClientsConfig::new(targets, a.n);
    cfg.ramp_per_sec = a.ramp;
    if !a.ramp.is_finite() || a.ramp < 0.0 {
        return Err("--ramp must be >= 0".into());
    }
    cfg.duration = a.duration;
    cfg.mix = parse::mix(&a.mix, a.rate)?;
    cfg.reconnect_after = a.reconnect_after;
    cfg.frame_bytes = a.frame_bytes;
    match a.src_ip_range.as_deref() {
        None => {}
        Some("none") => cfg.src_ips = None,
        Some(r) => cfg.src_ips = Some(parse::ipv4_range(r)?),
    }
    cfg.connect_timeout = a.connect_timeout;
    cfg.retry_delay = a.retry_delay;
    cfg.paced_burst = a.paced_burst;
    cfg.rcvbuf = a.rcvbuf;
    cfg.progress = !a.quiet;
    if !(0.0..=1.0).contains(&a.max_failed_fraction) {
        return Err("--max-failed-fraction must be between 0 and 1".into());
    }
    cfg.max_failed_fraction = a.max_failed_fraction;
    cfg.session_bytes = a.session_bytes;
    cfg.close = a.close;
    cfg.session_hold = a.session_hold;
    if !a.session_rate.is_finite() || a.session_rate < 0.0 {
        return Err("--session-rate must be >= 0".into());
    }
    cfg.session_rate = a.session_rate;
    cfg.http_version = a.http_version;
    cfg.icy = a.icy;
    cfg.websocket = a.websocket || a.urls.iter().any(|u| u.starts_with("ws://"));
    Ok(cfg)
}

fn run_clients(a: ClientsArgs) -> ExitCode {
    let cfg = match clients_config(&a) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("loadgen clients: {e}");
            return ExitCode::from(2);
        }
    };
    let stop = sys::install_stop_signals();
    let report = match clients::run(&cfg, stop) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("loadgen clients: {e}");
            return ExitCode::from(2);
        }
    };
    print!("{}", report.human());
    if let Some(path) = &a.json {
        let text = match serde_json::to_string_pretty(&report) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("loadgen clients: encoding the report: {e}");
                return ExitCode::from(2);
            }
        };
        if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("loadgen clients: writing {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
