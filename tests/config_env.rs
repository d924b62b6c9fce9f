//! One configuration path (issue 10): the environment (`RINGCAST_<FLAG>`)
//! configures the real binary; a flag beats its variable, a variable beats
//! the file; a per-stream variable with several streams and a bad variable
//! are errors naming the variable; SIGHUP re-applies the environment; and
//! an mp3 stream without `-content-type` is `audio/mpeg`.

mod common;

use common::{Client, Ringcast, WAIT};

/// A command writing 8-byte frames of `letter` every 20 ms, as words.
fn letters(letter: char) -> [String; 3] {
    let frame: String = std::iter::repeat_n(letter, 8).collect();
    [
        "sh".into(),
        "-c".into(),
        format!("while printf {frame}; do sleep 0.02; done"),
    ]
}

/// The same command as `RINGCAST_EXEC` writes it: shell-quoted words.
fn letters_var(letter: char) -> String {
    let [sh, c, script] = letters(letter);
    format!("{sh} {c} '{script}'")
}

/// The same command as a TOML list.
fn letters_toml(letter: char) -> String {
    let words: Vec<String> = letters(letter).iter().map(|w| format!("{w:?}")).collect();
    format!("[{}]", words.join(", "))
}

/// Read `n` frames of 8 bytes; every byte must be `letter`.
fn frames_of(c: &mut Client, letter: u8, n: usize) {
    let body = c.read_body(8 * n, WAIT);
    assert!(
        body.iter().all(|&b| b == letter),
        "expected frames of {:?}, got {:?}",
        letter as char,
        String::from_utf8_lossy(&body)
    );
}

#[test]
fn the_environment_configures_a_server_and_flags_beat_it() {
    // Ringcast gives -address 127.0.0.1:0 -log-level info: those flags
    // win over the variables (port 1, level error would hide the
    // `Listening at` line).
    let server = Ringcast::new()
        .env("RINGCAST_EXEC", letters_var('E'))
        .env("RINGCAST_FRAME_BYTES", "8")
        .env("RINGCAST_CONTENT_TYPE", "audio/x-env")
        .env("RINGCAST_ADDRESS", "127.0.0.1:1")
        .env("RINGCAST_LOG_LEVEL", "error")
        .start();
    assert_ne!(server.addr.port(), 1, "the -address flag must win");
    let mut c = server.get();
    assert_eq!(c.status_line(), "HTTP/1.1 200 OK", "{}", c.head);
    assert_eq!(c.header("Content-Type").as_deref(), Some("audio/x-env"));
    frames_of(&mut c, b'E', 5);
}

#[test]
fn the_environment_beats_the_file() {
    // The file's address is not bindable (or not free): the variable's is
    // used. A per-stream variable applies to the stream of a one-stream file.
    let server = Ringcast::new()
        .config_toml(format!(
            "listen = \"127.0.0.1:1\"\n[[stream]]\nmount = \"/a\"\nexec = {}\nframe_bytes = 4\n",
            letters_toml('A')
        ))
        .env("RINGCAST_ADDRESS", "127.0.0.1:0")
        .env("RINGCAST_FRAME_BYTES", "8")
        .start();
    assert_ne!(server.addr.port(), 1);
    let mut c = server.get_path("/a");
    assert!(c.status_line().contains("200"), "{}", c.head);
    // Frames of the variable's 8 bytes, not the file's 4.
    frames_of(&mut c, b'A', 5);
}

#[test]
fn a_per_stream_variable_with_a_file_of_two_streams_is_an_error() {
    let two = "[[stream]]\nmount = \"/a\"\ndemo = true\n[[stream]]\nmount = \"/b\"\ndemo = true\n";
    let (status, _, err) = Ringcast::new()
        .config_toml(two)
        .env("RINGCAST_FRAME_BYTES", "8")
        .run_to_exit(WAIT);
    assert_eq!(status.code(), Some(1));
    assert!(
        err.contains("RINGCAST_FRAME_BYTES: sets a per-stream setting, but the file has 2 streams"),
        "{err}"
    );
    // A server-wide one is fine there.
    let (status, _, err) = Ringcast::new()
        .config_toml(two)
        .arg("-check-config")
        .env("RINGCAST_MAX_CLIENTS", "8")
        .run_to_exit(WAIT);
    assert!(status.success(), "{err}");
}

#[test]
fn a_bad_variable_is_an_error_naming_it() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "RINGCAST_SOURCE_BUFFER",
            "2",
            "RINGCAST_SOURCE_BUFFER: invalid value \"2\": must be more than 2",
        ),
        (
            "RINGCAST_REOPEN",
            "no",
            "RINGCAST_REOPEN: invalid value \"no\"",
        ),
        (
            "RINGCAST_FRAMEBYTES",
            "8",
            "RINGCAST_FRAMEBYTES: unknown variable",
        ),
        ("RINGCAST_EXEC", "sh -c 'x", "RINGCAST_EXEC: invalid value"),
    ];
    for (name, value, message) in cases {
        let (status, _, err) = Ringcast::new()
            .args(["-check-config", "-path", "/dev/null"])
            .env(name, value)
            .run_to_exit(WAIT);
        assert_eq!(status.code(), Some(1), "{name}={value}: {err}");
        assert!(err.contains(message), "{name}={value}: {err}");
    }
    // RINGCAST_CHECK_CONFIG is -check-config.
    let (status, out, _) = Ringcast::new()
        .args(["-path", "/dev/null"])
        .env("RINGCAST_CHECK_CONFIG", "true")
        .run_to_exit(WAIT);
    assert!(status.success());
    assert!(out.contains("configuration OK"));
}

#[test]
fn an_mp3_stream_without_content_type_is_audio_mpeg() {
    // Was application/octet-stream on the command line (audio/mpeg in the
    // file) before issue 10.
    let server = Ringcast::new()
        .args(["-frame-filter", "mp3"])
        .source_exec(["sleep", "60"])
        .start();
    let c = server.get();
    assert_eq!(c.status_line(), "HTTP/1.1 200 OK", "{}", c.head);
    assert_eq!(c.header("Content-Type").as_deref(), Some("audio/mpeg"));
    let server = Ringcast::new()
        .env("RINGCAST_FRAME_FILTER", "aac")
        .source_exec(["sleep", "60"])
        .start();
    assert_eq!(
        server.get().header("Content-Type").as_deref(),
        Some("audio/aac")
    );
}

#[test]
fn sighup_re_reads_the_file_and_re_applies_the_environment() {
    let toml = |letter: char, content_type: &str| {
        format!(
            "listen = \"127.0.0.1:0\"\n[[stream]]\nmount = \"/a\"\nexec = {}\n\
             frame_bytes = 8\ncontent_type = \"{content_type}\"\n",
            letters_toml(letter)
        )
    };
    let server = Ringcast::new()
        .config_toml(toml('A', "audio/x-one"))
        .env("RINGCAST_EXEC", letters_var('E'))
        .start();
    let mut c = server.get_path("/a");
    assert_eq!(c.header("Content-Type").as_deref(), Some("audio/x-one"));
    frames_of(&mut c, b'E', 3);

    // The file changes its command and its content type; the variable still
    // gives the command.
    server.reload(&toml('B', "audio/x-two"));
    server.wait_log(
        "`reloaded ... 1 reconfigured`",
        |l| l.contains("reloaded") && l.contains("1 reconfigured"),
        WAIT,
    );
    let mut c = server.get_path("/a");
    assert_eq!(c.header("Content-Type").as_deref(), Some("audio/x-two"));
    frames_of(&mut c, b'E', 3);
}

/// A file with every key of the next issues' settings (push and relay
/// sources, fallbacks, destinations, stream info, ICY, titles, CORS and
/// headers, users, health mounts, mirrors, channels).
const ALL_NEW_KEYS: &str = r#"listen = "127.0.0.1:0"
health_mounts = ["/live.mp3"]

[[user]]
name = "dj"
password = "$2y$05$abcdefghijklmnopqrstuu5Ry4hEJ4hBqCJq0ODRb1aQ4v8NG6QTu"
roles = ["source"]
mounts = ["/live.mp3"]

[[user]]
name = "edge"
password_file = "PASSWORD_FILE"
roles = ["relay", "admin"]

[[stream]]
mount = "/live.mp3"
push = true
fallback = "/relay.mp3"
fallback_override = false
fallback_after = "3s"
source_timeout = "15s"
name = "Live"
description = "The live show"
genre = "Jazz"
url = "https://radio.example/"
bitrate = 128
public = true
icy_metaint = 8192
cors_origin = "https://player.example"

[stream.headers]
X-Station = "example"

[[stream.destination]]
url = "http://icecast.example:8000/live.mp3"
user = "source"
password = "hackme"
legacy_source = true
retry_limit = 5

[[stream]]
mount = "/relay.mp3"
relay = ["http://relay:p%40ss@origin.example:8000/live.mp3", "http://backup.example/live.mp3"]
on_demand = true
on_demand_idle = "30s"
fallback = "/loop.mp3"
cors_origin = ""

[[stream]]
mount = "/loop.mp3"
path = "/srv/loop.mp3"
framer = "mp3"
realtime = true
loop = true
title_file = "/run/ringcast/title"

[[stream]]
mount = "/pipe"
exec = ["cat", "/dev/zero"]
title_command = ["tail", "-F", "/run/ringcast/titles"]

[[mirror]]
origin = "http://master.example:8000"
user = "relay"
password = "hackme"
interval = "60s"
framer = "mp3"
frame_bytes = 2881
source_buffer = 256
burst_bytes = 65536
burst_ms = 2000
client_max_bytes = 0
max_clients = 100
fallback_after = "2s"
source_timeout = "10s"
on_demand = true
on_demand_idle = "10s"
icy_metaint = 16000
cors_origin = "*"

[channels]
max_channels = 16
keys = ["abc", "k-2"]
framer = "raw"
frame_bytes = 4096
source_buffer = 64
burst_bytes = 65536
"#;

#[test]
fn check_config_accepts_every_new_key_and_lists_the_new_errors_with_their_lines() {
    let dir = common::TempDir::new("new-keys");
    let pw = dir.write("pw", "from a file\n");
    let good = ALL_NEW_KEYS.replace("PASSWORD_FILE", pw.to_str().unwrap());
    let (status, stdout, stderr) = Ringcast::new()
        .config_toml(good.clone())
        .arg("-check-config")
        .run_to_exit(WAIT);
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("configuration OK"));

    // The same file with mistakes in the new keys: each one listed with its
    // line, none with a secret in it.
    let bad = good
        .replace("roles = [\"source\"]", "roles = [\"dj\"]")
        .replace("fallback = \"/loop.mp3\"", "fallback = \"/live.mp3\"")
        .replace("X-Station = \"example\"", "Server = \"mine\"")
        .replace(
            "http://relay:p%40ss@origin.example:8000",
            "https://relay:TOPSECRET@origin.example",
        )
        .replace("retry_limit = 5", "retry_limit = 0")
        .replace("max_channels = 16", "max_channels = 2048")
        .replace("bitrate = 128", "bitrate = 0")
        .replace(
            "\"/dev/zero\"]\n",
            "\"/dev/zero\"]\non_demand = true\nrealtime = true\n",
        );
    let (status, _, err) = Ringcast::new()
        .config_toml(bad)
        .arg("-check-config")
        .run_to_exit(WAIT);
    assert_eq!(status.code(), Some(1), "{err}");
    for want in [
        ":7: user #1 roles: invalid value \"dj\": a role is source, admin or relay",
        ":18: stream #1 fallback: fallback cycle: /live.mp3 -> /relay.mp3 -> /live.mp3",
        ":26: stream #1 bitrate: invalid value 0: must be at least 1",
        ":32: stream #1 headers.Server: ringcast sets this header itself",
        ":39: stream #1 destination #1 retry_limit: invalid value 0: must be at least 1",
        ":43: stream #2 relay: invalid value \"https://relay:<secret>@origin.example/live.mp3\": https:// is not supported",
        ":60: stream #4 on_demand: only for a relay source",
        ":61: stream #4 realtime: only for a path source",
        ":84: channels max_channels: invalid value 2048: must be at most 1024",
    ] {
        assert!(err.contains(want), "{want:?} not in:\n{err}");
    }
    assert!(
        !err.contains("TOPSECRET") && !err.contains("hackme"),
        "{err}"
    );
}
