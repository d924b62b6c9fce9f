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
