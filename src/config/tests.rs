use super::table::{def, Setting, TABLE};
use super::*;
use std::os::unix::ffi::OsStringExt;

fn os(v: &[&str]) -> Vec<OsString> {
    v.iter().map(OsString::from).collect()
}

/// [`parse`] with RUST_LOG (or nothing) as the environment.
fn parse_args_with_env(
    args: Vec<OsString>,
    stdin_is_tty: bool,
    rust_log: Option<&str>,
) -> Result<Command, ConfigError> {
    let env: Vec<(&str, &str)> = rust_log.map(|v| ("RUST_LOG", v)).into_iter().collect();
    super::parse(args, stdin_is_tty, env).map(|p| p.command)
}

/// Parse with these variables as the environment.
fn parse_env(v: &[&str], tty: bool, env: &[(&str, &str)]) -> Result<Command, ConfigError> {
    super::parse(os(v), tty, env.iter().copied()).map(|p| p.command)
}

/// Parse with stdin not a terminal and no environment.
fn parse(v: &[&str]) -> Result<Command, ConfigError> {
    parse_args_with_env(os(v), false, None)
}

fn run(v: &[&str]) -> Config {
    match parse(v) {
        Ok(Command::Run(c)) => c,
        other => panic!("{v:?}: expected Run, got {other:?}"),
    }
}

fn stream(v: &[&str]) -> StreamConfig {
    run(v).streams.remove(0)
}

/// The flag named by the error for this command line.
fn err_flag(v: &[&str]) -> String {
    match parse(v) {
        Err(e) => {
            assert!(!e.message.is_empty());
            assert!(e.to_string().starts_with(&format!("-{}: ", e.flag)));
            e.flag
        }
        Ok(c) => panic!("{v:?}: expected an error, got {c:?}"),
    }
}

fn defaults() -> Config {
    Config {
        listen: vec!["0.0.0.0:80".parse().unwrap()],
        admin_listen: None,
        config_file: None,
        cpu_max: cpus_online(),
        stat_log_interval: None,
        uid: None,
        flush_interval: None,
        listen_backlog: 4096,
        max_clients: 0,
        log_level: log::LevelFilter::Info,
        streams: vec![StreamConfig {
            mount: None,
            source: SourceSpec::Path(PathBuf::from("/dev/stdin")),
            framer: FramerKind::Raw,
            frame_bytes: 64,
            header_bytes: 0,
            source_buffer: 64,
            source_bandwidth: 0,
            client_max_bytes: 0,
            close_idle: false,
            content_type: "application/octet-stream".to_owned(),
            reopen: true,
            max_quiet_interval: None,
            max_clients: 0,
            burst_bytes: 0,
            burst: None,
            ..StreamConfig::defaults()
        }],
        users: Vec::new(),
        health_mounts: Vec::new(),
        mirrors: Vec::new(),
        channels: Channels::off(),
    }
}

#[test]
fn table_is_indexed_by_setting() {
    for (i, d) in TABLE.iter().enumerate() {
        assert_eq!(d.setting as usize, i, "{}", d.flag);
        assert!(std::ptr::eq(def(d.setting), d));
    }
}

#[test]
fn every_default() {
    assert_eq!(run(&[]), defaults());
}

#[test]
fn every_flag_in_all_four_spellings() {
    // (flag, value or None for a bool, the expected change from defaults)
    type Edit = fn(&mut Config);
    let cases: Vec<(&str, Option<&str>, Edit)> = vec![
        ("address", Some(":8000"), |c| {
            c.listen = vec!["0.0.0.0:8000".parse().unwrap()]
        }),
        ("path", Some("/tmp/fifo"), |c| {
            c.streams[0].source = SourceSpec::Path("/tmp/fifo".into())
        }),
        ("frame-bytes", Some("2048"), |c| {
            c.streams[0].frame_bytes = 2048
        }),
        ("frame-filter", Some("mp3"), |c| {
            // mp3 without -frame-bytes makes room for any legal frame; and
            // without -content-type it is audio/mpeg (was
            // application/octet-stream on the command line, issue 10).
            c.streams[0].framer = FramerKind::Mp3;
            c.streams[0].frame_bytes = 2881;
            c.streams[0].content_type = "audio/mpeg".into();
        }),
        ("header-bytes", Some("44"), |c| {
            c.streams[0].header_bytes = 44
        }),
        ("source-buffer", Some("40"), |c| {
            c.streams[0].source_buffer = 40
        }),
        ("source-bandwidth", Some("16000"), |c| {
            c.streams[0].source_bandwidth = 16000
        }),
        ("client-max-bytes", Some("1000000000"), |c| {
            c.streams[0].client_max_bytes = 1_000_000_000
        }),
        ("close-idle", None, |c| c.streams[0].close_idle = true),
        ("content-type", Some("audio/mpeg"), |c| {
            c.streams[0].content_type = "audio/mpeg".into()
        }),
        ("cpu-max", Some("1"), |c| c.cpu_max = 1),
        ("reopen", None, |_| {}),
        ("stat-log-interval", Some("1m"), |c| {
            c.stat_log_interval = Some(Duration::from_secs(60))
        }),
        ("max-quiet-interval", Some("10s"), |c| {
            c.streams[0].max_quiet_interval = Some(Duration::from_secs(10))
        }),
        ("uid", Some("1234"), |c| c.uid = Some(1234)),
        ("flush-interval", Some("0"), |c| {
            c.flush_interval = Some(Duration::ZERO)
        }),
        ("listen-backlog", Some("128"), |c| c.listen_backlog = 128),
        ("max-clients", Some("10000"), |c| c.max_clients = 10000),
        ("log-level", Some("debug"), |c| {
            c.log_level = log::LevelFilter::Debug
        }),
        ("relay", Some("http://u:p@origin:8000/live.mp3"), |c| {
            // A relay is mp3 unless said otherwise (frames of any size).
            c.streams[0].source = SourceSpec::Relay(vec![Upstream {
                url: "http://origin:8000/live.mp3".into(),
                user: Some("u".into()),
                password: Some(Secret::Plain("p".into())),
            }]);
            c.streams[0].framer = FramerKind::Mp3;
            c.streams[0].frame_bytes = 2881;
            c.streams[0].content_type = "audio/mpeg".into();
        }),
        ("icy-metaint", Some("8192"), |c| {
            c.streams[0].icy_metaint = 8192
        }),
        ("cors-origin", Some("https://player.example"), |c| {
            c.streams[0].cors_origin = Some("https://player.example".into())
        }),
        ("source-timeout", Some("30s"), |c| {
            c.streams[0].source_timeout = Duration::from_secs(30)
        }),
    ];
    for (name, value, edit) in cases {
        let mut want = defaults();
        edit(&mut want);
        let spellings: Vec<Vec<String>> = match value {
            Some(v) => vec![
                vec![format!("-{name}"), v.to_owned()],
                vec![format!("-{name}={v}")],
                vec![format!("--{name}"), v.to_owned()],
                vec![format!("--{name}={v}")],
            ],
            None => vec![
                vec![format!("-{name}")],
                vec![format!("--{name}")],
                vec![format!("-{name}=true")],
                vec![format!("--{name}=1")],
            ],
        };
        for args in spellings {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            assert_eq!(run(&args), want, "{args:?}");
        }
    }
}

#[test]
fn usage_lists_every_flag_with_its_default() {
    let Ok(Command::Help(text)) = parse(&["-help"]) else {
        panic!("no help")
    };
    assert_eq!(text, usage());
    for d in TABLE.iter().filter(|d| !d.flag.is_empty()) {
        let line = format!("  -{}", d.flag);
        let at = text
            .find(&format!("{line}\n"))
            .or_else(|| text.find(&format!("{line} ")));
        let at = at.unwrap_or_else(|| panic!("{} not in usage", d.flag));
        let entry = &text[at..];
        let entry = &entry[..entry[3..].find("\n  -").map_or(entry.len(), |i| i + 3)];
        if d.setting != Setting::Uid && d.setting != Setting::CpuMax {
            assert!(entry.contains("(default "), "{entry}");
            assert!(entry.contains(d.default), "{entry}");
        }
    }
    assert!(text.contains("-h, -help"));
    assert!(text.contains(&format!("(default {} here", cpus_online())));
}

#[test]
fn help_spellings() {
    for v in [&["-h"][..], &["-help"], &["--help"], &["--h"], &["-help=x"]] {
        assert!(matches!(parse(v), Ok(Command::Help(_))), "{v:?}");
    }
    // Like Go: flags before -help are parsed first, the rest is not.
    assert!(matches!(
        parse(&["-reopen=false", "-help", "-nope"]),
        Ok(Command::Help(_))
    ));
    assert_eq!(err_flag(&["-nope", "-help"]), "nope");
}

#[test]
fn version_and_check_config() {
    let want = format!("ringcast {}", env!("CARGO_PKG_VERSION"));
    assert_eq!(parse(&["--version"]), Ok(Command::Version(want.clone())));
    assert_eq!(parse(&["-version"]), Ok(Command::Version(want)));
    assert_eq!(parse(&["-version=false"]), Ok(Command::Run(defaults())));
    assert_eq!(
        parse(&["-check-config"]),
        Ok(Command::CheckConfig(defaults()))
    );
    assert_eq!(
        err_flag(&["-check-config", "-frame-bytes", "0"]),
        "frame-bytes"
    );
}

#[test]
fn booleans_use_go_parse_bool() {
    for f in ["false", "0", "f", "F", "FALSE", "False"] {
        assert!(!stream(&[&format!("-reopen={f}")]).reopen, "{f}");
        assert!(!stream(&[&format!("--reopen={f}")]).reopen, "{f}");
    }
    for t in ["true", "1", "t", "T", "TRUE", "True"] {
        assert!(stream(&[&format!("-close-idle={t}")]).close_idle, "{t}");
    }
    assert!(
        stream(&["-reopen=false", "-reopen"]).reopen,
        "last one wins"
    );
    assert_eq!(err_flag(&["-reopen=no"]), "reopen");
    assert_eq!(err_flag(&["-reopen="]), "reopen");
    // A boolean never takes a separate value: "false" is a positional
    // argument, i.e. a command without -exec.
    assert_eq!(err_flag(&["-reopen", "false"]), "exec");
}

#[test]
fn exec_takes_the_rest() {
    let exec = |program: &str, args: &[&str]| SourceSpec::Exec {
        program: program.to_owned(),
        args: args.iter().map(|s| s.to_string()).collect(),
    };
    assert_eq!(
        stream(&["-exec", "cmd", "-a", "b"]).source,
        exec("cmd", &["-a", "b"])
    );
    let s = stream(&[
        "-address",
        ":0",
        "-exec",
        "-reopen=false",
        "sh",
        "-c",
        "x -y",
    ]);
    assert_eq!(s.source, exec("sh", &["-c", "x -y"]));
    assert!(!s.reopen);
    // Flags after the command belong to it.
    let s = stream(&["-exec", "cmd", "-frame-bytes", "9"]);
    assert_eq!(s.source, exec("cmd", &["-frame-bytes", "9"]));
    assert_eq!(s.frame_bytes, 64);
    // "--" ends the flags and is dropped; later ones are kept.
    assert_eq!(
        stream(&["-exec", "--", "-cmd", "--"]).source,
        exec("-cmd", &["--"])
    );
    assert_eq!(stream(&["--exec", "--", "cmd"]).source, exec("cmd", &[]));
    // "-" alone is a positional argument.
    assert_eq!(stream(&["-exec", "-", "x"]).source, exec("-", &["x"]));
}

#[test]
fn exec_errors() {
    assert_eq!(err_flag(&["-exec"]), "exec");
    assert_eq!(err_flag(&["-exec", "--"]), "exec");
    assert_eq!(err_flag(&["cmd"]), "exec");
    assert_eq!(err_flag(&["-reopen=false", "--", "-x"]), "exec");
    assert_eq!(err_flag(&["-exec=false", "cmd"]), "exec");
    assert_eq!(err_flag(&["-path", "/x", "-exec", "cmd"]), "path");
    assert_eq!(err_flag(&["-exec", "-path", "/x", "cmd"]), "path");
    assert_eq!(err_flag(&["-exec", ""]), "exec");
}

#[test]
fn value_flags_take_the_next_argument_whatever_it_is() {
    assert_eq!(
        stream(&["-path", "-odd"]).source,
        SourceSpec::Path("-odd".into())
    );
    assert_eq!(stream(&["-content-type", "a=b"]).content_type, "a=b");
    assert_eq!(stream(&["-content-type=a=b"]).content_type, "a=b");
    assert_eq!(
        stream(&["-frame-bytes", "1", "-frame-bytes", "2"]).frame_bytes,
        2
    );
}

#[test]
fn errors_name_their_flag() {
    let cases: &[(&[&str], &str)] = &[
        (&["-bogus"], "bogus"),
        (&["--bogus=1"], "bogus"),
        (&["---x"], "x"),
        (&["-=x"], "=x"),
        (&["-address"], "address"),
        (&["-frame-bytes"], "frame-bytes"),
        (&["-address", "nope"], "address"),
        (&["-address", ":99999"], "address"),
        (&["-frame-bytes", "abc"], "frame-bytes"),
        (&["-frame-bytes", "0"], "frame-bytes"),
        (&["-frame-bytes", "-1"], "frame-bytes"),
        (&["-frame-bytes", ""], "frame-bytes"),
        (&["-frame-filter", "flac"], "frame-filter"),
        (&["-header-bytes", "-1"], "header-bytes"),
        (&["-source-buffer", "2"], "source-buffer"),
        (&["-source-buffer", "x"], "source-buffer"),
        (&["-source-bandwidth", "1.5"], "source-bandwidth"),
        (
            &["-client-max-bytes", "99999999999999999999999"],
            "client-max-bytes",
        ),
        (&["-content-type", "a\r\nSet-Cookie: x"], "content-type"),
        (&["-content-type", ""], "content-type"),
        (&["-cpu-max", "0"], "cpu-max"),
        (&["-cpu-max", "two"], "cpu-max"),
        (&["-stat-log-interval", "5"], "stat-log-interval"),
        (&["-max-quiet-interval", "-1s"], "max-quiet-interval"),
        (&["-uid", "no-such-user-ringcast-test"], "uid"),
        (&["-uid", "-1"], "uid"),
        (&["-uid", ""], "uid"),
        (&["-flush-interval", "1x"], "flush-interval"),
        (&["-listen-backlog", "0"], "listen-backlog"),
        (&["-listen-backlog", "65536"], "listen-backlog"),
        (&["-max-clients", "-5"], "max-clients"),
        (&["-log-level", "loud"], "log-level"),
        (&["-path", ""], "path"),
        // Was "source-buffer" (the ring check came first): -frame-bytes now
        // has its limit on the command line too (issue 10).
        (&["-frame-bytes", "18446744073709551615"], "frame-bytes"),
        (&["-frame-bytes", "64Mi"], "frame-bytes"),
        (
            &["-frame-bytes", "67108864", "-source-buffer", "65"],
            "source-buffer",
        ),
    ];
    for (args, flag) in cases {
        assert_eq!(err_flag(args), *flag, "{args:?}");
    }
    let e = parse(&["-frame-bytes", "0"]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "-frame-bytes: invalid value \"0\": must be at least 1"
    );
    let e = parse(&["-source-buffer", "2"]).unwrap_err();
    assert!(e.message.contains("more than 2"), "{e}");
    let e = parse(&["-bogus"]).unwrap_err();
    assert!(e.to_string().contains("not defined"), "{e}");
}

#[test]
fn non_utf8_arguments_are_errors_or_paths() {
    let bad = OsString::from_vec(vec![b'/', 0xff, b'x']);
    let c = parse_args_with_env(vec!["-path".into(), bad.clone()], false, None);
    let Ok(Command::Run(c)) = c else {
        panic!("{c:?}")
    };
    assert_eq!(
        c.streams[0].source,
        SourceSpec::Path(PathBuf::from(bad.clone()))
    );
    let e = parse_args_with_env(vec!["-exec".into(), bad.clone()], false, None);
    assert_eq!(e.unwrap_err().flag, "exec");
    let e = parse_args_with_env(vec!["-address".into(), bad.clone()], false, None);
    assert_eq!(e.unwrap_err().flag, "address");
    let mut flag = b"-".to_vec();
    flag.extend_from_slice(bad.as_encoded_bytes());
    let e = parse_args_with_env(vec![OsString::from_vec(flag)], false, None);
    assert!(e.is_err());
}

#[test]
fn go_integer_syntax() {
    assert_eq!(stream(&["-frame-bytes", "0x40"]).frame_bytes, 64);
    assert_eq!(stream(&["-frame-bytes", "0100"]).frame_bytes, 64);
    assert_eq!(stream(&["-frame-bytes", "0o100"]).frame_bytes, 64);
    assert_eq!(stream(&["-frame-bytes", "0b1000000"]).frame_bytes, 64);
    assert_eq!(stream(&["-frame-bytes", "+64"]).frame_bytes, 64);
    assert_eq!(
        stream(&["-client-max-bytes", "1_000_000"]).client_max_bytes,
        1_000_000
    );
}

#[test]
fn demo_selection() {
    let tty = |v: &[&str]| match parse_args_with_env(os(v), true, None) {
        Ok(Command::Run(mut c)) => c.streams.remove(0),
        other => panic!("{other:?}"),
    };
    let demo = tty(&[]);
    assert_eq!(demo.source, SourceSpec::Demo);
    assert_eq!(demo.framer, FramerKind::Raw);
    assert_eq!(demo.frame_bytes, 4410);
    assert_eq!(demo.header_bytes, 44);
    assert_eq!(demo.content_type, "audio/wav");
    assert_eq!(demo.source_buffer, 64);
    // What the user set explicitly wins, even when equal to the default.
    let s = tty(&[
        "-frame-bytes",
        "64",
        "-header-bytes=0",
        "-content-type",
        "x/y",
    ]);
    assert_eq!(
        (s.source, s.frame_bytes, s.header_bytes),
        (SourceSpec::Demo, 64, 0)
    );
    assert_eq!(s.content_type, "x/y");
    assert_eq!(tty(&["-source-buffer", "8"]).source_buffer, 8);
    // Not a terminal: stdin; explicit sources are never the demo.
    assert_eq!(stream(&[]).source, SourceSpec::Path("/dev/stdin".into()));
    let s = tty(&["-path", "/dev/stdin"]);
    assert_eq!(
        (s.source, s.frame_bytes),
        (SourceSpec::Path("/dev/stdin".into()), 64)
    );
    let s = tty(&["-exec", "cat"]);
    assert!(matches!(s.source, SourceSpec::Exec { .. }));
    assert_eq!(s.content_type, "application/octet-stream");
}

#[test]
fn cpu_max_bounds() {
    let n = cpus_online();
    assert!(n >= 1);
    assert_eq!(run(&[]).cpu_max, n);
    assert_eq!(run(&["-cpu-max", "1"]).cpu_max, 1);
    assert_eq!(run(&["-cpu-max", &n.to_string()]).cpu_max, n);
    let e = parse(&["-cpu-max", &(n + 1).to_string()]).unwrap_err();
    assert_eq!(e.flag, "cpu-max");
    assert!(e.message.contains(&format!("between 1 and {n}")), "{e}");
    assert_eq!(err_flag(&["-cpu-max", "0"]), "cpu-max");
    assert_eq!(err_flag(&["-cpu-max", "-1"]), "cpu-max");
}

#[test]
fn uid_numeric_or_name() {
    assert_eq!(run(&["-uid", "0"]).uid, Some(0));
    assert_eq!(run(&["-uid", "65534"]).uid, Some(65534));
    // root is uid 0 wherever there is a password database.
    assert_eq!(run(&["-uid", "root"]).uid, Some(0));
    assert_eq!(err_flag(&["-uid", "4294967295"]), "uid");
    assert_eq!(err_flag(&["-uid", "a\0b"]), "uid");
}

#[test]
fn log_level_flag_then_rust_log() {
    let level = |v: &[&str], env: Option<&str>| match parse_args_with_env(os(v), false, env) {
        Ok(Command::Run(c)) => c.log_level,
        other => panic!("{other:?}"),
    };
    use log::LevelFilter::*;
    assert_eq!(level(&[], None), Info);
    assert_eq!(level(&[], Some("debug")), Debug);
    assert_eq!(level(&[], Some("TRACE")), Trace);
    assert_eq!(level(&[], Some("ringcast=debug")), Info);
    assert_eq!(level(&["-log-level", "warn"], Some("debug")), Warn);
    for (word, want) in [
        ("error", Error),
        ("warn", Warn),
        ("info", Info),
        ("trace", Trace),
    ] {
        assert_eq!(level(&["-log-level", word], None), want);
    }
}

#[test]
fn frame_filter_spellings() {
    assert_eq!(stream(&["-frame-filter", ""]).framer, FramerKind::Raw);
    assert_eq!(stream(&["-frame-filter="]).framer, FramerKind::Raw);
    assert_eq!(stream(&["-frame-filter", "raw"]).framer, FramerKind::Raw);
    assert_eq!(stream(&["-frame-filter", "mp3"]).framer, FramerKind::Mp3);
    let aac = stream(&["-frame-filter", "aac"]);
    assert_eq!((aac.framer, aac.frame_bytes), (FramerKind::Aac, 8191));
    let ogg = stream(&["-frame-filter", "OGG"]);
    assert_eq!((ogg.framer, ogg.frame_bytes), (FramerKind::Ogg, 65307));
    let ogg = stream(&["-frame-filter", "ogg", "-frame-bytes", "9000"]);
    assert_eq!((ogg.framer, ogg.frame_bytes), (FramerKind::Ogg, 9000));
    // streamserve's README spells it -filter.
    assert_eq!(stream(&["-filter", "mp3"]).framer, FramerKind::Mp3);
    assert_eq!(stream(&["-filter=raw"]).framer, FramerKind::Raw);
}

#[test]
fn streamserve_readme_command_lines() {
    let s = run(&[
        "-address",
        ":8800",
        "-source-buffer",
        "40",
        "-frame-bytes",
        "44100",
        "-reopen=false",
        "-path",
        "/dev/fd/63",
    ]);
    assert_eq!(s.listen[0].port(), 8800);
    let st = &s.streams[0];
    assert_eq!(
        (st.source_buffer, st.frame_bytes, st.reopen),
        (40, 44100, false)
    );
    assert_eq!(st.source, SourceSpec::Path("/dev/fd/63".into()));
    let s = run(&[
        "-address",
        "127.0.0.1:8800",
        "-frame-filter",
        "mp3",
        "-frame-bytes",
        "2048",
    ]);
    assert_eq!(s.listen[0], "127.0.0.1:8800".parse().unwrap());
    assert_eq!(s.streams[0].framer, FramerKind::Mp3);
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn arg() -> impl Strategy<Value = OsString> {
        let flag = proptest::sample::select(
            TABLE
                .iter()
                .map(|d| d.flag)
                .chain(["help", "h", "bogus", ""])
                .collect::<Vec<_>>(),
        );
        let value = proptest::sample::select(vec![
            "",
            "0",
            "1",
            "3",
            "-1",
            "64",
            "0x40",
            "99999999999999999999",
            "true",
            "f",
            ":0",
            "127.0.0.1:0",
            "[::1]:0",
            "300ms",
            "1.5s",
            "-5s",
            "mp3",
            "raw",
            "root",
            "debug",
            "--",
            "-",
            "=",
            "\u{b5}s",
            "1h1m1s",
        ]);
        prop_oneof![
            (flag.clone(), 0..4u8).prop_map(|(f, style)| match style {
                0 => format!("-{f}"),
                1 => format!("--{f}"),
                2 => format!("-{f}="),
                _ => format!("---{f}"),
            }
            .into()),
            (flag, value.clone()).prop_map(|(f, v)| format!("-{f}={v}").into()),
            value.prop_map(OsString::from),
            "\\PC{0,12}".prop_map(OsString::from),
            proptest::collection::vec(any::<u8>(), 0..8).prop_map(OsString::from_vec),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn arbitrary_arguments_never_panic(
            args in proptest::collection::vec(arg(), 0..10),
            tty in any::<bool>(),
            env in proptest::option::of("\\PC{0,8}"),
        ) {
            let _ = parse_args_with_env(args, tty, env.as_deref());
        }

        #[test]
        fn arbitrary_environments_never_panic(
            args in proptest::collection::vec(arg(), 0..4),
            vars in proptest::collection::vec((variable(), variable_value()), 0..8),
        ) {
            let _ = super::super::parse(args, false, vars);
        }
    }

    fn variable() -> impl Strategy<Value = OsString> {
        // Not RINGCAST_CONFIG: a generated file name could be a FIFO.
        let names: Vec<String> = TABLE
            .iter()
            .filter(|d| d.setting != Setting::Config)
            .map(table::env_name)
            .chain([
                "RINGCAST_".into(),
                "RINGCAST_X".into(),
                "RUST_LOG".into(),
                "PATH".into(),
            ])
            .collect();
        prop_oneof![
            proptest::sample::select(names).prop_map(OsString::from),
            proptest::collection::vec(any::<u8>(), 0..12).prop_map(|mut b| {
                let mut name = b"RINGCAST_".to_vec();
                name.append(&mut b);
                OsString::from_vec(name)
            }),
        ]
    }

    fn variable_value() -> impl Strategy<Value = OsString> {
        prop_oneof![
            "[ -~]{0,16}".prop_map(OsString::from),
            "\\PC{0,12}".prop_map(OsString::from),
            proptest::collection::vec(any::<u8>(), 0..8).prop_map(OsString::from_vec),
        ]
    }
}

// ---------------------------------------------------------------------------
// The environment (issue 10)
// ---------------------------------------------------------------------------

fn run_env(v: &[&str], env: &[(&str, &str)]) -> Config {
    match parse_env(v, false, env) {
        Ok(Command::Run(c)) => c,
        other => panic!("{v:?} {env:?}: expected Run, got {other:?}"),
    }
}

fn env_err(v: &[&str], env: &[(&str, &str)]) -> ConfigError {
    match parse_env(v, false, env) {
        Err(e) => e,
        Ok(c) => panic!("{v:?} {env:?}: expected an error, got {c:?}"),
    }
}

/// (flag, value) pairs that set every setting of the command line away from
/// its default.
const EVERY_FLAG: &[(&str, &str)] = &[
    ("address", ":8000"),
    ("path", "/tmp/fifo"),
    ("frame-bytes", "0x800"),
    ("frame-filter", "mp3"),
    ("header-bytes", "44"),
    ("source-buffer", "40"),
    ("source-bandwidth", "16000"),
    ("client-max-bytes", "1_000_000"),
    ("close-idle", "true"),
    ("content-type", "audio/x-test"),
    ("cpu-max", "1"),
    ("reopen", "F"),
    ("stat-log-interval", "1m"),
    ("max-quiet-interval", "10s"),
    ("uid", "1234"),
    ("flush-interval", "0"),
    ("listen-backlog", "128"),
    ("max-clients", "10000"),
    ("log-level", "debug"),
    ("burst-bytes", "65536"),
    ("burst-ms", "2000"),
    ("icy-metaint", "0"),
    ("cors-origin", "https://player.example"),
    ("source-timeout", "1m"),
];

#[test]
fn every_flag_has_a_variable_with_the_same_meaning() {
    let args: Vec<String> = EVERY_FLAG
        .iter()
        .map(|(f, v)| format!("-{f}={v}"))
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let by_flags = run(&args);
    assert_ne!(by_flags, defaults());
    let names: Vec<String> = EVERY_FLAG
        .iter()
        .map(|(f, _)| format!("RINGCAST_{}", f.to_uppercase().replace('-', "_")))
        .collect();
    let env: Vec<(&str, &str)> = names
        .iter()
        .zip(EVERY_FLAG)
        .map(|(n, (_, v))| (n.as_str(), *v))
        .collect();
    assert_eq!(run_env(&[], &env), by_flags);
    // One at a time too, against the flag alone.
    for ((flag, value), (name, _)) in EVERY_FLAG.iter().zip(&env) {
        let arg = format!("-{flag}={value}");
        assert_eq!(run_env(&[], &[(name, value)]), run(&[&arg]), "{name}");
    }
}

#[test]
fn every_variable_name_comes_from_the_table() {
    for d in TABLE.iter().filter(|d| !d.flag.is_empty()) {
        let name = table::env_name(d);
        assert_eq!(
            name,
            format!("RINGCAST_{}", d.flag.to_uppercase().replace('-', "_"))
        );
        assert!(std::ptr::eq(table::by_env(&name).unwrap(), d));
    }
    assert!(
        table::by_env("RINGCAST_MOUNT").is_none(),
        "file-only settings have no variable"
    );
}

#[test]
fn a_flag_beats_its_variable_and_a_variable_beats_the_default() {
    let env = [
        ("RINGCAST_FRAME_BYTES", "100"),
        ("RINGCAST_ADDRESS", "127.0.0.1:9"),
    ];
    let c = run_env(&["-frame-bytes", "200"], &env);
    assert_eq!(c.streams[0].frame_bytes, 200);
    assert_eq!(c.listen, vec!["127.0.0.1:9".parse().unwrap()]);
    // The source is one setting: a flag's -path hides the variable's command.
    let c = run_env(&["-path", "/x"], &[("RINGCAST_EXEC", "cat")]);
    assert_eq!(c.streams[0].source, SourceSpec::Path("/x".into()));
    let c = run_env(&["-exec", "cat"], &[("RINGCAST_PATH", "/x")]);
    assert!(matches!(c.streams[0].source, SourceSpec::Exec { .. }));
    // A source from the environment is not the demo, even on a terminal.
    let Ok(Command::Run(c)) = parse_env(&[], true, &[("RINGCAST_PATH", "/x")]) else {
        panic!()
    };
    assert_eq!(c.streams[0].source, SourceSpec::Path("/x".into()));
}

#[test]
fn exec_variable_is_shell_quoted_words_never_a_shell() {
    let c = run_env(
        &[],
        &[("RINGCAST_EXEC", "sh -c 'echo $HOME | cat' \"a b\"")],
    );
    assert_eq!(
        c.streams[0].source,
        SourceSpec::Exec {
            program: "sh".into(),
            args: vec!["-c".into(), "echo $HOME | cat".into(), "a b".into()],
        }
    );
    let e = env_err(&[], &[("RINGCAST_EXEC", "sh -c 'oops")]);
    assert_eq!(e.variable.as_deref(), Some("RINGCAST_EXEC"));
    assert!(e.to_string().starts_with("RINGCAST_EXEC: "), "{e}");
    let e = env_err(&[], &[("RINGCAST_EXEC", "   ")]);
    assert!(e.message.contains("needs a command"), "{e}");
    let e = env_err(&[], &[("RINGCAST_EXEC", "cat"), ("RINGCAST_PATH", "/x")]);
    assert_eq!(
        e.to_string(),
        "RINGCAST_PATH: cannot be used together with RINGCAST_EXEC (choose one source)"
    );
    // Positional arguments still need -exec.
    assert_eq!(env_err(&["cat"], &[("RINGCAST_EXEC", "cat")]).flag, "exec");
}

#[test]
fn booleans_in_the_environment_use_go_parse_bool() {
    for f in ["false", "0", "f", "F", "FALSE", "False"] {
        assert!(
            !run_env(&[], &[("RINGCAST_REOPEN", f)]).streams[0].reopen,
            "{f}"
        );
    }
    for t in ["true", "1", "t", "T", "TRUE", "True"] {
        assert!(run_env(&[], &[("RINGCAST_CLOSE_IDLE", t)]).streams[0].close_idle);
    }
    let e = env_err(&[], &[("RINGCAST_REOPEN", "no")]);
    assert_eq!(
        (e.flag.as_str(), e.variable.as_deref()),
        ("reopen", Some("RINGCAST_REOPEN"))
    );
}

#[test]
fn bad_variables_are_errors_naming_them() {
    let e = env_err(&[], &[("RINGCAST_FRAME_BYTES", "0")]);
    assert_eq!(
        e.to_string(),
        "RINGCAST_FRAME_BYTES: invalid value \"0\": must be at least 1"
    );
    assert_eq!(e.flag, "frame-bytes");
    // A typo is an error, not a silent default.
    let e = env_err(&[], &[("RINGCAST_FRAME_BYTE", "100")]);
    assert_eq!(e.variable.as_deref(), Some("RINGCAST_FRAME_BYTE"));
    assert!(e.message.contains("unknown variable"), "{e}");
    for name in ["RINGCAST_VERSION", "RINGCAST_HELP"] {
        let e = env_err(&[], &[(name, "1")]);
        assert!(e.message.contains("command-line flag only"), "{e}");
    }
    // Not settings, or empty: ignored.
    assert_eq!(
        run_env(&[], &[("RINGCAST_FAILPOINT", "x"), ("RINGCASTX", "1")]),
        defaults()
    );
    assert_eq!(
        run_env(&[], &[("RINGCAST_FRAME_BYTES", ""), ("RINGCAST_NOPE", "")]),
        defaults()
    );
    // Non-UTF-8: a path may be anything, a number may not.
    let bad = OsString::from_vec(vec![b'/', 0xff]);
    let c = super::parse(
        Vec::new(),
        false,
        [(OsString::from("RINGCAST_PATH"), bad.clone())],
    );
    let Ok(Command::Run(c)) = c.map(|p| p.command) else {
        panic!()
    };
    assert_eq!(c.streams[0].source, SourceSpec::Path(bad.clone().into()));
    let e = super::parse(
        Vec::new(),
        false,
        [(OsString::from("RINGCAST_CPU_MAX"), bad)],
    );
    assert_eq!(
        e.err().unwrap().variable.as_deref(),
        Some("RINGCAST_CPU_MAX")
    );
}

#[test]
fn help_and_version_ignore_the_environment() {
    let env = [("RINGCAST_BOGUS", "1")];
    assert!(matches!(
        parse_env(&["-help"], false, &env),
        Ok(Command::Help(_))
    ));
    assert!(matches!(
        parse_env(&["-version"], false, &env),
        Ok(Command::Version(_))
    ));
}

#[test]
fn check_config_from_the_environment() {
    let env = [("RINGCAST_CHECK_CONFIG", "1")];
    assert_eq!(
        parse_env(&[], false, &env),
        Ok(Command::CheckConfig(defaults()))
    );
    assert_eq!(
        parse_env(&["-check-config=false"], false, &env),
        Ok(Command::Run(defaults()))
    );
    let e = env_err(&[], &[("RINGCAST_CHECK_CONFIG", "yes")]);
    assert_eq!(e.variable.as_deref(), Some("RINGCAST_CHECK_CONFIG"));
}

#[test]
fn log_level_flag_then_variable_then_rust_log() {
    use log::LevelFilter::*;
    let level = |v: &[&str], env: &[(&str, &str)]| run_env(v, env).log_level;
    let both = [("RINGCAST_LOG_LEVEL", "warn"), ("RUST_LOG", "debug")];
    assert_eq!(level(&[], &both), Warn);
    assert_eq!(level(&["-log-level", "error"], &both), Error);
    assert_eq!(level(&[], &[("RUST_LOG", "trace")]), Trace);
    assert_eq!(level(&[], &[("RUST_LOG", "ringcast=debug")]), Info);
}

// ---------------------------------------------------------------------------
// The file with the environment over it
// ---------------------------------------------------------------------------

/// Validate a file's text with these variables (and flags) over it.
fn file_env(text: &str, flags: &[&str], env: &[(&str, &str)]) -> Result<Config, String> {
    let flags = match args::scan(os(flags)).unwrap() {
        args::Scanned::Flags { flags, .. } => flags,
        args::Scanned::Help => panic!(),
    };
    let env = super::env::read(env.iter().copied());
    file::from_text(text, &flags, &env).map_err(|(inside, outside)| {
        let mut all: Vec<String> = inside
            .into_iter()
            .map(|(l, m)| format!("{l:?}: {m}"))
            .collect();
        all.extend(outside);
        all.join("\n")
    })
}

const ONE: &str = "listen = \"127.0.0.1:1\"\nlog_level = \"warn\"\nflush_interval = \"50ms\"\n\
                   [[stream]]\nmount = \"/a\"\nexec = [\"cat\"]\nframe_bytes = 100\n";
const TWO: &str =
    "[[stream]]\nmount = \"/a\"\ndemo = true\n[[stream]]\nmount = \"/b\"\ndemo = true\n";

#[test]
fn the_environment_beats_the_file() {
    let env = [
        ("RINGCAST_ADDRESS", "127.0.0.1:0"),
        ("RINGCAST_FLUSH_INTERVAL", "0"),
        ("RINGCAST_FRAME_BYTES", "300"),
        ("RINGCAST_PATH", "/x"),
        ("RINGCAST_CPU_MAX", "1"),
    ];
    let c = file_env(ONE, &[], &env).unwrap();
    assert_eq!(c.listen, vec!["127.0.0.1:0".parse().unwrap()]);
    assert_eq!(c.flush_interval, Some(Duration::ZERO));
    assert_eq!(c.cpu_max, 1);
    assert_eq!(c.streams[0].frame_bytes, 300);
    assert_eq!(
        c.streams[0].source,
        SourceSpec::Path("/x".into()),
        "the source is one setting"
    );
    assert_eq!(c.streams[0].mount.as_deref(), Some("/a"));
    // Server-wide settings apply over a file of several streams too.
    let c = file_env(TWO, &[], &[("RINGCAST_MAX_CLIENTS", "7")]).unwrap();
    assert_eq!(c.max_clients, 7);
    assert!(c.streams.iter().all(|s| s.max_clients == 0));
}

#[test]
fn a_per_stream_variable_with_several_streams_is_an_error() {
    let e = file_env(
        TWO,
        &[],
        &[("RINGCAST_FRAME_BYTES", "300"), ("RINGCAST_REOPEN", "0")],
    )
    .unwrap_err();
    assert!(
        e.contains("RINGCAST_FRAME_BYTES: sets a per-stream setting, but the file has 2 streams"),
        "{e}"
    );
    assert!(e.contains("RINGCAST_REOPEN: "), "{e}");
}

#[test]
fn file_and_variable_problems_are_listed_together() {
    let e = file_env(
        "[[stream]]\nmount = \"/a\"\ndemo = true\nsource_buffer = 2\n",
        &[],
        &[("RINGCAST_LISTEN_BACKLOG", "0"), ("RINGCAST_TYPO", "1")],
    )
    .unwrap_err();
    assert!(
        e.contains("Some(4): stream #1 source_buffer: invalid value 2: must be more than 2"),
        "{e}"
    );
    assert!(
        e.contains("RINGCAST_LISTEN_BACKLOG: invalid value \"0\": must be at least 1"),
        "{e}"
    );
    assert!(e.contains("RINGCAST_TYPO: unknown variable"), "{e}");
}

#[test]
fn log_level_in_file_mode() {
    use log::LevelFilter::*;
    let level = |flags: &[&str], env: &[(&str, &str)]| file_env(ONE, flags, env).unwrap().log_level;
    // The file says warn: RUST_LOG is below it, the variable above it, the
    // flag above all.
    assert_eq!(level(&[], &[("RUST_LOG", "debug")]), Warn);
    assert_eq!(level(&[], &[("RINGCAST_LOG_LEVEL", "error")]), Error);
    assert_eq!(
        level(&["-log-level", "trace"], &[("RINGCAST_LOG_LEVEL", "error")]),
        Trace
    );
    let no_level = ONE.replace("log_level = \"warn\"\n", "");
    assert_eq!(
        file_env(&no_level, &[], &[("RUST_LOG", "debug")])
            .unwrap()
            .log_level,
        Debug
    );
}

#[test]
fn config_file_from_the_environment() {
    let dir = std::env::temp_dir().join(format!("ringcast-config-env-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("one.toml");
    std::fs::write(&path, ONE).unwrap();
    let p = path.to_str().unwrap();
    let c = run_env(
        &[],
        &[("RINGCAST_CONFIG", p), ("RINGCAST_FRAME_BYTES", "300")],
    );
    assert_eq!(c.config_file.as_deref(), Some(path.as_path()));
    assert_eq!(c.streams[0].frame_bytes, 300);
    // A flag beside it is an error, as beside -config, and says where the
    // setting can go instead.
    let e = env_err(&["-frame-bytes", "300"], &[("RINGCAST_CONFIG", p)]);
    assert_eq!(e.flag, "frame-bytes");
    assert!(e.message.contains("RINGCAST_CONFIG"), "{e}");
    assert!(
        e.message.contains("frame_bytes") && e.message.contains("RINGCAST_FRAME_BYTES"),
        "{e}"
    );
    let e = env_err(&["-config", p, "-address", ":0"], &[]);
    assert_eq!(e.flag, "address");
    let e = env_err(&[], &[("RINGCAST_CONFIG", "/nonexistent/ringcast.toml")]);
    assert!(
        e.to_string()
            .starts_with("RINGCAST_CONFIG: /nonexistent/ringcast.toml: 1 problem"),
        "{e}"
    );
    // The flag names the file when both do.
    let c = run_env(&["-config", p], &[("RINGCAST_CONFIG", "/nonexistent.toml")]);
    assert_eq!(c.config_file.as_deref(), Some(path.as_path()));
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------
// Drifts between the old two validators, settled (issue 10)
// ---------------------------------------------------------------------------

#[test]
fn framers_have_their_content_type_on_every_front_end() {
    for (framer, ct) in [
        ("mp3", "audio/mpeg"),
        ("aac", "audio/aac"),
        ("ogg", "audio/ogg"),
        ("raw", "application/octet-stream"),
    ] {
        assert_eq!(stream(&["-frame-filter", framer]).content_type, ct);
        let c = run_env(&[], &[("RINGCAST_FRAME_FILTER", framer)]);
        assert_eq!(c.streams[0].content_type, ct);
        let toml = format!("[[stream]]\nmount = \"/a\"\npath = \"/x\"\nframer = \"{framer}\"\n");
        assert_eq!(
            file_env(&toml, &[], &[]).unwrap().streams[0].content_type,
            ct
        );
        // Given, it wins.
        let s = stream(&["-frame-filter", framer, "-content-type", "x/y"]);
        assert_eq!(s.content_type, "x/y");
    }
}

#[test]
fn framer_names_ignore_case_in_the_file_too() {
    let toml = "[[stream]]\nmount = \"/a\"\npath = \"/x\"\nframer = \"MP3\"\n";
    assert_eq!(
        file_env(toml, &[], &[]).unwrap().streams[0].framer,
        FramerKind::Mp3
    );
}

#[test]
fn one_set_of_limits() {
    let file = |key: &str, value: &str| {
        let toml = format!("[[stream]]\nmount = \"/a\"\npath = \"/x\"\n{key} = {value}\n");
        file_env(&toml, &[], &[])
    };
    // (flag, key, largest accepted, smallest refused)
    let cases = [
        ("frame-bytes", "frame_bytes", "67108864", "67108865"),
        ("header-bytes", "header_bytes", "1048576", "1048577"),
        ("source-buffer", "source_buffer", "16777216", "16777217"),
        ("burst-ms", "burst_ms", "3600000", "3600001"),
        (
            "source-bandwidth",
            "source_bandwidth",
            "9223372036854775807",
            "9223372036854775808",
        ),
    ];
    for (flag, key, ok, bad) in cases {
        assert!(parse(&[&format!("-{flag}={ok}")]).is_ok(), "{flag}");
        assert!(file(key, ok).is_ok(), "{key}");
        let e = parse(&[&format!("-{flag}={bad}")]).unwrap_err();
        assert_eq!(e.flag, flag);
        if bad.parse::<i64>().is_ok() {
            let e = file(key, bad).unwrap_err();
            assert!(
                e.contains(&format!("{key}: invalid value {bad}: must be at most {ok}")),
                "{e}"
            );
        }
    }
    // The ring: at most 4 GiB, named after -source-buffer.
    let e = parse(&["-frame-bytes", "67108864", "-source-buffer", "65"]).unwrap_err();
    assert!(e.message.contains("larger than 4 GiB"), "{e}");
    let toml =
        "[[stream]]\nmount = \"/a\"\npath = \"/x\"\nframe_bytes = 67108864\nsource_buffer = 65\n";
    let e = file_env(toml, &[], &[]).unwrap_err();
    assert!(
        e.contains("Some(5): stream #1 source_buffer:") && e.contains("larger than 4 GiB"),
        "{e}"
    );
}

#[test]
fn an_empty_path_and_a_bad_command_word_are_errors_in_the_file_too() {
    let e = file_env("[[stream]]\nmount = \"/a\"\npath = \"\"\n", &[], &[]).unwrap_err();
    assert!(
        e.contains("path: invalid value \"\": must not be empty"),
        "{e}"
    );
    let e = file_env(
        "[[stream]]\nmount = \"/a\"\nexec = [\"cat\", 1]\n",
        &[],
        &[],
    )
    .unwrap_err();
    assert!(e.contains("exec: must be a list of strings"), "{e}");
}

#[test]
fn the_demo_is_the_same_on_the_command_line_and_in_the_file() {
    let Ok(Command::Run(mut cmd)) = parse_env(&[], true, &[]) else {
        panic!()
    };
    let mut file = file_env("[[stream]]\nmount = \"/\"\ndemo = true\n", &[], &[]).unwrap();
    file.streams[0].mount = None;
    assert_eq!(cmd.streams.remove(0), file.streams.remove(0));
    let demo = run_env(&[], &[]);
    assert_eq!(
        demo.streams[0].source,
        SourceSpec::Path("/dev/stdin".into())
    );
}

#[test]
fn the_flush_interval_is_adaptive_unless_given() {
    assert_eq!(def(Setting::FlushInterval).default, "auto");
    assert_eq!(run_env(&[], &[]).flush_interval, None);
    let c = run_env(&["-flush-interval", "auto"], &[]);
    assert_eq!(c.flush_interval, None);
    let c = run_env(&["-flush-interval", "250ms"], &[]);
    assert_eq!(c.flush_interval, Some(Duration::from_millis(250)));
    let c = run_env(&[], &[("RINGCAST_FLUSH_INTERVAL", "0")]);
    assert_eq!(c.flush_interval, Some(Duration::ZERO));
}

// ---------------------------------------------------------------------------
// Property: one meaning whatever the front end
// ---------------------------------------------------------------------------

mod equivalence {
    //! For generated settings, the command line, the equivalent environment
    //! and the equivalent TOML file (one `[[stream]]`) give equal
    //! configurations, or problems of the same kinds on the same settings.

    use super::super::raw::{Fault, Problem};
    use super::super::table::{def, Scope, Setting};
    use super::super::{args, command_line, env, file, Config, Layer};
    use proptest::prelude::*;
    use std::ffi::OsString;

    /// A generated value, before it is written for a front end.
    #[derive(Debug, Clone)]
    enum V {
        /// An integer (a TOML integer in the file).
        Int(i64),
        /// Text (a TOML string in the file), never empty (an empty variable
        /// is ignored, an empty flag is not).
        Str(&'static str),
        Bool(bool),
    }

    /// The source: a path, a command, both (an error), or a relay.
    #[derive(Debug, Clone)]
    enum Source {
        Path(&'static str),
        Exec(Vec<&'static str>),
        Both(&'static str, Vec<&'static str>),
        Relay(&'static str),
    }

    fn ints(v: &'static [i64]) -> BoxedStrategy<V> {
        proptest::sample::select(v).prop_map(V::Int).boxed()
    }

    fn strs(v: &'static [&'static str]) -> BoxedStrategy<V> {
        proptest::sample::select(v).prop_map(V::Str).boxed()
    }

    const DURATIONS: &[&str] = &["0", "1.5s", "300ms", "1h", "5", "-1s", "1x"];

    /// Valid and invalid values of a setting.
    fn values(s: Setting) -> BoxedStrategy<V> {
        const MAX: i64 = i64::MAX;
        match s {
            Setting::Address => strs(&[":8000", "127.0.0.1:0", "[::1]:0", "1.2.3.4", ":99999"]),
            Setting::FrameBytes => prop_oneof![
                ints(&[1, 100, 2881, 1 << 26, (1 << 26) + 1, 0, -1, 1 << 40]),
                strs(&["12x"]),
            ]
            .boxed(),
            Setting::FrameFilter => strs(&["raw", "mp3", "aac", "ogg", "MP3", "flac"]),
            Setting::HeaderBytes => ints(&[0, 44, 1 << 20, (1 << 20) + 1, -5]),
            Setting::SourceBuffer => ints(&[3, 64, 200, 1 << 24, 2, (1 << 24) + 1]),
            Setting::SourceBandwidth | Setting::ClientMaxBytes | Setting::BurstBytes => {
                ints(&[0, 16000, -1, MAX])
            }
            Setting::CloseIdle | Setting::Reopen => any::<bool>().prop_map(V::Bool).boxed(),
            Setting::ContentType => strs(&["audio/x", "a\u{1}b", "text/plain; charset=utf-8"]),
            Setting::CpuMax => ints(&[1, 0, 9999]),
            Setting::StatLogInterval | Setting::MaxQuietInterval | Setting::FlushInterval => {
                strs(DURATIONS)
            }
            Setting::Uid => strs(&["0", "65534", "-1", "4294967295", "root"]),
            Setting::ListenBacklog => ints(&[1, 128, 65535, 0, 65536]),
            Setting::MaxClients => ints(&[0, 10, -1]),
            Setting::LogLevel => strs(&["debug", "WARN", "loud"]),
            Setting::BurstMs => ints(&[0, 2000, 3_600_000, 3_600_001]),
            Setting::IcyMetaint => ints(&[0, 16000, 1_000_000, 1_000_001, -1]),
            Setting::CorsOrigin => strs(&["*", "https://a.example", "a\u{1}b"]),
            Setting::SourceTimeout => strs(&["10s", "250ms", "0", "1x", "-1s"]),
            _ => strs(&["?"]),
        }
    }

    /// The settings generated (the source apart).
    const GENERATED: &[Setting] = &[
        Setting::Address,
        Setting::FrameBytes,
        Setting::FrameFilter,
        Setting::HeaderBytes,
        Setting::SourceBuffer,
        Setting::SourceBandwidth,
        Setting::ClientMaxBytes,
        Setting::CloseIdle,
        Setting::ContentType,
        Setting::CpuMax,
        Setting::Reopen,
        Setting::StatLogInterval,
        Setting::MaxQuietInterval,
        Setting::Uid,
        Setting::FlushInterval,
        Setting::ListenBacklog,
        Setting::MaxClients,
        Setting::LogLevel,
        Setting::BurstBytes,
        Setting::BurstMs,
        Setting::IcyMetaint,
        Setting::CorsOrigin,
        Setting::SourceTimeout,
    ];

    fn settings() -> impl Strategy<Value = (Vec<(Setting, V)>, Source)> {
        let each: Vec<BoxedStrategy<Option<(Setting, V)>>> = GENERATED
            .iter()
            .map(|&s| proptest::option::weighted(0.2, values(s).prop_map(move |v| (s, v))).boxed())
            .collect();
        let words = proptest::sample::select(vec![
            vec!["cat"],
            vec!["sh", "-c", "echo 'a b' \"c\" $HOME"],
            vec![""],
        ]);
        let path = proptest::sample::select(vec!["/tmp/x", "/dev/null"]);
        let relay = proptest::sample::select(vec![
            "http://origin:8000/live.mp3",
            "http://u:p%40ss@[::1]/a",
            "https://origin/a",
            "http://origin:0/a",
            "http://origin",
        ]);
        let source = prop_oneof![
            4 => path.clone().prop_map(Source::Path),
            4 => words.clone().prop_map(Source::Exec),
            1 => (path, words).prop_map(|(p, w)| Source::Both(p, w)),
            2 => relay.prop_map(Source::Relay),
        ];
        (each, source).prop_map(|(each, source)| (each.into_iter().flatten().collect(), source))
    }

    fn text(v: &V) -> String {
        match v {
            V::Int(n) => n.to_string(),
            V::Str(s) => (*s).to_owned(),
            V::Bool(b) => b.to_string(),
        }
    }

    fn as_args(values: &[(Setting, V)], source: &Source) -> Vec<OsString> {
        let mut out: Vec<String> = values
            .iter()
            .map(|(s, v)| format!("-{}={}", def(*s).flag, text(v)))
            .collect();
        let (path, words) = match source {
            Source::Path(p) => (Some(p), None),
            Source::Exec(w) => (None, Some(w)),
            Source::Both(p, w) => (Some(p), Some(w)),
            Source::Relay(r) => {
                out.push(format!("-relay={r}"));
                (None, None)
            }
        };
        if let Some(p) = path {
            out.push(format!("-path={p}"));
        }
        if let Some(w) = words {
            out.push("-exec".into());
            out.push("--".into());
            out.extend(w.iter().map(|w| w.to_string()));
        }
        out.into_iter().map(OsString::from).collect()
    }

    fn quote(w: &str) -> String {
        format!("'{}'", w.replace('\'', "'\\''"))
    }

    fn as_env(values: &[(Setting, V)], source: &Source) -> Vec<(String, String)> {
        let name = |s: Setting| super::table::env_name(def(s));
        let mut out: Vec<(String, String)> =
            values.iter().map(|(s, v)| (name(*s), text(v))).collect();
        let words = |w: &[&str]| w.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" ");
        match source {
            Source::Path(p) => out.push((name(Setting::Path), p.to_string())),
            Source::Exec(w) => out.push((name(Setting::Exec), words(w))),
            Source::Both(p, w) => {
                out.push((name(Setting::Path), p.to_string()));
                out.push((name(Setting::Exec), words(w)));
            }
            Source::Relay(r) => out.push((name(Setting::Relay), r.to_string())),
        }
        out
    }

    fn as_toml(values: &[(Setting, V)], source: &Source) -> String {
        let line = |s: Setting, v: &V| {
            let v = match v {
                V::Int(n) => toml::Value::Integer(*n),
                V::Str(s) => toml::Value::String((*s).to_owned()),
                V::Bool(b) => toml::Value::Boolean(*b),
            };
            format!("{} = {v}\n", def(s).key)
        };
        let words = |w: &[&str]| {
            toml::Value::Array(
                w.iter()
                    .map(|w| toml::Value::String(w.to_string()))
                    .collect(),
            )
        };
        let mut out = String::new();
        for (s, v) in values
            .iter()
            .filter(|(s, _)| def(*s).scope == Scope::Server)
        {
            out.push_str(&line(*s, v));
        }
        out.push_str("\n[[stream]]\nmount = \"/s\"\n");
        for (s, v) in values
            .iter()
            .filter(|(s, _)| def(*s).scope == Scope::Stream)
        {
            out.push_str(&line(*s, v));
        }
        match source {
            Source::Path(p) => out.push_str(&format!("path = {:?}\n", p)),
            Source::Exec(w) => out.push_str(&format!("exec = {}\n", words(w))),
            Source::Both(p, w) => {
                out.push_str(&format!("path = {:?}\n", p));
                out.push_str(&format!("exec = {}\n", words(w)));
            }
            Source::Relay(r) => out.push_str(&format!("relay = {:?}\n", r)),
        }
        out
    }

    /// What is compared of an outcome: the configuration (without what only
    /// a file has), or the problems' (setting, kind).
    type Outcome = Result<Config, Vec<(Option<Setting>, Fault)>>;

    fn outcome(r: Result<Config, Vec<Problem>>) -> Outcome {
        r.map(|mut c| {
            c.config_file = None;
            for s in &mut c.streams {
                s.mount = None;
            }
            c
        })
        .map_err(|problems| {
            let mut kinds: Vec<_> = problems.iter().map(|p| (p.setting, p.fault)).collect();
            kinds.sort();
            kinds.dedup();
            kinds
        })
    }

    fn by_args(args: Vec<OsString>) -> Outcome {
        let args::Scanned::Flags { mut flags, rest } = args::scan(args).unwrap() else {
            panic!("help")
        };
        args::attach_command(&mut flags, rest).unwrap();
        outcome(command_line(&flags, &env::Environment::default(), false))
    }

    fn by_env(vars: Vec<(String, String)>) -> Outcome {
        outcome(command_line(&Layer::default(), &env::read(vars), false))
    }

    fn by_file(text: &str) -> Outcome {
        let lines = file::Lines::new(text);
        outcome(file::check(
            text,
            &lines,
            &Layer::default(),
            &env::Environment::default(),
        ))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]
        #[test]
        fn command_line_environment_and_file_agree((values, source) in settings()) {
            let a = by_args(as_args(&values, &source));
            let e = by_env(as_env(&values, &source));
            let toml = as_toml(&values, &source);
            let f = by_file(&toml);
            prop_assert_eq!(&a, &e, "command line vs environment");
            prop_assert_eq!(&a, &f, "command line vs file:\n{}", toml);
        }
    }
}

// ---------------------------------------------------------------------------
// The next issues' settings: sources, fallbacks, destinations, stream info,
// ICY, CORS and headers, users, health mounts, mirrors, channels
// ---------------------------------------------------------------------------

/// A file of one stream `/a` with these lines in it (after its mount), and
/// these lines at the top level before it.
fn one(top: &str, stream: &str) -> String {
    format!("{top}\n[[stream]]\nmount = \"/a\"\n{stream}\n")
}

fn ok(text: &str) -> Config {
    file_env(text, &[], &[]).unwrap_or_else(|e| panic!("{text}\n---\n{e}"))
}

fn first(text: &str) -> StreamConfig {
    ok(text).streams.remove(0)
}

/// Every problem of a file, one `Some(LINE): MESSAGE` per line.
fn errs(text: &str) -> String {
    match file_env(text, &[], &[]) {
        Err(e) => e,
        Ok(c) => panic!("{text}\n--- expected problems, got {c:?}"),
    }
}

/// Assert a problem list contains each of these pieces.
#[track_caller]
fn has(e: &str, pieces: &[&str]) {
    for p in pieces {
        assert!(e.contains(p), "{p:?} not in:\n{e}");
    }
}

#[test]
fn push_is_a_fourth_source_with_network_defaults() {
    let s = first(&one("", "push = true\nreopen = false"));
    assert_eq!(s.source, SourceSpec::Push);
    // mp3 unless said otherwise; reopen has no meaning (a push mount waits
    // for the next encoder).
    assert_eq!(
        (s.framer, s.frame_bytes, s.content_type.as_str(), s.reopen),
        (FramerKind::Mp3, 2881, "audio/mpeg", true)
    );
    let s = first(&one("", "push = true\nframer = \"raw\""));
    assert_eq!((s.framer, s.frame_bytes), (FramerKind::Raw, 4096));
    let s = first(&one("", "push = true\nframer = \"ogg\""));
    assert_eq!(s.content_type, "audio/ogg");
    // push = false is no source.
    let s = first(&one("", "push = false\npath = \"/x\""));
    assert_eq!(s.source, SourceSpec::Path("/x".into()));
    let e = errs(&one("", "push = true\npath = \"/x\""));
    has(&e, &["exactly one source", "push = true or relay"]);
    let e = errs(&one("", "push = false"));
    has(&e, &["Some(2): stream #1 path: no source"]);
    let e = errs(&one("", "push = \"yes\""));
    has(
        &e,
        &["Some(4): stream #1 push: must be true or false, not string"],
    );
}

#[test]
fn close_idle_does_not_go_with_push_or_relay() {
    let e = errs(&one("", "push = true\nclose_idle = true"));
    has(
        &e,
        &["Some(5): stream #1 close_idle: cannot be used with a pushed stream"],
    );
    let e = errs(&one("", "relay = \"http://h/x\"\nclose_idle = true"));
    has(
        &e,
        &["close_idle: cannot be used with a relay: on_demand = true"],
    );
    assert!(!first(&one("", "push = true\nclose_idle = false")).close_idle);
    let e = env_err(&["-relay", "http://h/x", "-close-idle"], &[]);
    assert_eq!(e.flag, "close-idle");
    assert!(e.message.contains("configuration file"), "{e}");
}

#[test]
fn relay_takes_one_url_or_a_list_in_priority_order() {
    let s = first(&one("", "relay = \"http://origin.example/live.mp3\""));
    assert_eq!(
        s.source,
        SourceSpec::Relay(vec![Upstream {
            url: "http://origin.example:80/live.mp3".into(),
            user: None,
            password: None,
        }])
    );
    assert_eq!((s.framer, s.reopen), (FramerKind::Mp3, true));
    let s = first(&one(
        "",
        "relay = [\"http://a:b%40c%3Ad@Up.Example:8000/live.mp3?x=1\", \"http://[::1]/b\", \"http://only@h:9/c\"]",
    ));
    let SourceSpec::Relay(ups) = s.source else {
        panic!()
    };
    assert_eq!(
        ups,
        vec![
            Upstream {
                url: "http://up.example:8000/live.mp3?x=1".into(),
                user: Some("a".into()),
                password: Some(Secret::Plain("b@c:d".into())),
            },
            Upstream {
                url: "http://[::1]:80/b".into(),
                user: None,
                password: None,
            },
            Upstream {
                url: "http://h:9/c".into(),
                user: Some("only".into()),
                password: None,
            },
        ]
    );
    // The same on the command line and in the environment (one URL).
    let c = run(&["-relay", "http://a:b@h:1/x"]);
    let env = run_env(&[], &[("RINGCAST_RELAY", "http://a:b@h:1/x")]);
    assert_eq!(c, env);
    assert!(matches!(&c.streams[0].source, SourceSpec::Relay(u) if u[0].url == "http://h:1/x"));
    assert_eq!(err_flag(&["-relay", "http://h/x", "-path", "/y"]), "path");
}

#[test]
fn bad_relay_urls_are_errors_without_their_password() {
    let cases = [
        ("https://h/x", "TLS"),
        ("HTTPS://h/x", "TLS"),
        ("ftp://h/x", "must be an http:// URL"),
        ("h/x", "must be an http:// URL"),
        ("http:///x", "needs a host"),
        ("http://h", "needs the upstream's path"),
        ("http://h:0/x", "invalid port"),
        ("http://h:65536/x", "invalid port"),
        ("http://h:/x", "invalid port"),
        ("http://h/x#frag", "#fragment"),
        ("http://h/a b", "spaces"),
        ("http://h/é", "ASCII"),
        ("http://[zz]/x", "IPv6"),
        ("http://:pw@h/x", "user name before '@' is empty"),
        ("http://u:@h/x", "password after ':' is empty"),
        ("http://u:%zz@h/x", "percent-encoding"),
    ];
    for (url, why) in cases {
        let e = errs(&one("", &format!("relay = {url:?}")));
        has(&e, &["Some(4): stream #1 relay: invalid value", why]);
    }
    let e = errs(&one("", "relay = []"));
    has(&e, &["relay: needs at least one upstream URL"]);
    let e = errs(&one("", "relay = [\"http://h/a\", 3]"));
    has(
        &e,
        &["relay: must be a list of URL strings, not a list with a non-string"],
    );
    // A password is never quoted, even one with an unencoded '/' or '@'.
    for url in [
        "http://user:hunter2@h:99999/x",
        "http://user:hun/ter2@h/x",
        "https://user:hunter2@h/x",
        "http://user:hun@ter2@h:0/x",
    ] {
        let e = errs(&one("", &format!("relay = [{url:?}]")));
        assert!(!e.contains("hunter2") && !e.contains("ter2"), "{e}");
        assert!(e.contains("user:<secret>@"), "{e}");
        let e = env_err(&["-relay", url], &[]);
        assert!(!e.to_string().contains("ter2"), "{e}");
    }
}

#[test]
fn realtime_and_loop_are_for_path_sources() {
    let s = first(&one("", "path = \"/x.mp3\"\nrealtime = true\nloop = true"));
    assert!(s.realtime && s.loop_file && s.reopen);
    let d = first(&one("", "path = \"/x.mp3\""));
    assert!(!d.realtime && !d.loop_file);
    let e = errs(&one("", "exec = [\"cat\"]\nrealtime = true\nloop = true"));
    has(
        &e,
        &[
            "Some(5): stream #1 realtime: only for a path source",
            "Some(6): stream #1 loop: only for a path source",
        ],
    );
    // false is fine anywhere.
    assert!(!first(&one("", "push = true\nrealtime = false")).realtime);
    let e = errs(&one("", "path = \"/x\"\nloop = true\nreopen = false"));
    has(
        &e,
        &["Some(6): stream #1 reopen: cannot be false with loop = true"],
    );
}

const FALLBACKS: &str = r#"
[[stream]]
mount = "/live.mp3"
push = true
fallback = "/relay.mp3"
fallback_override = false
fallback_after = "500ms"
source_timeout = "3s"

[[stream]]
mount = "/relay.mp3"
relay = "http://h/x"
fallback = "/loop.mp3"

[[stream]]
mount = "/loop.mp3"
path = "/srv/loop.mp3"
framer = "mp3"
loop = true
"#;

#[test]
fn fallbacks_chain_to_mounts_of_the_same_format() {
    let c = ok(FALLBACKS);
    let live = &c.streams[0];
    assert_eq!(live.fallback.as_deref(), Some("/relay.mp3"));
    assert!(!live.fallback_override);
    assert_eq!(live.fallback_after, Duration::from_millis(500));
    assert_eq!(live.source_timeout, Duration::from_secs(3));
    let relay = &c.streams[1];
    assert_eq!(relay.fallback.as_deref(), Some("/loop.mp3"));
    assert!(relay.fallback_override);
    assert_eq!(relay.fallback_after, Duration::from_secs(2));
    assert_eq!(relay.source_timeout, Duration::from_secs(10));
    assert_eq!(c.streams[2].fallback, None);
}

#[test]
fn bad_fallbacks() {
    let e = errs(&FALLBACKS.replace("\"/loop.mp3\"\n\n", "\"/nowhere\"\n\n"));
    has(
        &e,
        &["Some(13): stream #2 fallback: invalid value \"/nowhere\": names no configured mount"],
    );
    let e = errs(&FALLBACKS.replace("fallback = \"/relay.mp3\"", "fallback = \"/live.mp3\""));
    has(
        &e,
        &["Some(5): stream #1 fallback: invalid value \"/live.mp3\": is this stream's own mount"],
    );
    let e = errs(&FALLBACKS.replace("framer = \"mp3\"", "framer = \"ogg\""));
    has(
        &e,
        &[
            "Some(13): stream #2 fallback:",
            "/loop.mp3 is Ogg (audio/ogg), this stream is Mp3 (audio/mpeg)",
        ],
    );
    let e = errs(&FALLBACKS.replace("loop = true", "loop = true\ncontent_type = \"audio/x-mp3\""));
    has(&e, &["stream #2 fallback:", "content_type"]);
    let e = errs(&one("", "push = true\nfallback = \"live\""));
    has(
        &e,
        &["fallback: invalid value \"live\": must be the mount of another stream"],
    );
    for key in ["fallback_after", "source_timeout"] {
        let e = errs(&one("", &format!("push = true\n{key} = \"0\"")));
        has(
            &e,
            &[&format!(
                "Some(5): stream #1 {key}: invalid value \"0\": must be more than 0"
            )],
        );
        let e = errs(&one("", &format!("push = true\n{key} = \"2 s\"")));
        has(&e, &[&format!("stream #1 {key}: invalid value \"2 s\"")]);
    }
    let e = env_err(&["-source-timeout", "0s"], &[]);
    assert_eq!(e.flag, "source-timeout");
}

#[test]
fn a_fallback_cycle_is_reported_once_with_its_mounts() {
    let text = "[[stream]]\nmount = \"/a\"\npush = true\nfallback = \"/b\"\n\
                [[stream]]\nmount = \"/b\"\npush = true\nfallback = \"/c\"\n\
                [[stream]]\nmount = \"/c\"\npush = true\nfallback = \"/a\"\n\
                [[stream]]\nmount = \"/d\"\npush = true\nfallback = \"/b\"\n";
    let e = errs(text);
    assert_eq!(
        e,
        "Some(4): stream #1 fallback: fallback cycle: /a -> /b -> /c -> /a"
    );
    // Two streams falling back to each other.
    let e = errs(
        "[[stream]]\nmount = \"/a\"\npush = true\nfallback = \"/b\"\n\
                  [[stream]]\nmount = \"/b\"\npush = true\nfallback = \"/a\"\n",
    );
    assert_eq!(
        e,
        "Some(4): stream #1 fallback: fallback cycle: /a -> /b -> /a"
    );
}

#[test]
fn on_demand_is_for_relays() {
    let s = first(&one(
        "",
        "relay = \"http://h/x\"\non_demand = true\non_demand_idle = \"1m\"",
    ));
    assert!(s.on_demand);
    assert_eq!(s.on_demand_idle, Duration::from_secs(60));
    let s = first(&one("", "relay = \"http://h/x\""));
    assert!(!s.on_demand);
    assert_eq!(s.on_demand_idle, Duration::from_secs(10));
    let e = errs(&one("", "push = true\non_demand = true"));
    has(
        &e,
        &["Some(5): stream #1 on_demand: only for a relay source"],
    );
    let e = errs(&one(
        "",
        "relay = \"http://h/x\"\non_demand_idle = \"soon\"",
    ));
    has(&e, &["on_demand_idle: invalid value \"soon\""]);
}

#[test]
fn destinations() {
    let c = ok(&one(
        "",
        "push = true\n\
         [[stream.destination]]\nurl = \"http://ice.example:8000/live.mp3\"\npassword = \"hackme\"\n\
         [[stream.destination]]\nurl = \"http://ice2.example/live\"\nuser = \"other\"\n\
         password = \"x\"\nlegacy_source = true\nretry_limit = 3\n",
    ));
    assert_eq!(
        c.streams[0].destinations,
        vec![
            Destination {
                url: "http://ice.example:8000/live.mp3".into(),
                user: "source".into(),
                password: Secret::Plain("hackme".into()),
                legacy_source: false,
                retry_limit: None,
            },
            Destination {
                url: "http://ice2.example:80/live".into(),
                user: "other".into(),
                password: Secret::Plain("x".into()),
                legacy_source: true,
                retry_limit: Some(3),
            },
        ]
    );
    // Inline tables too.
    let c = ok(&one(
        "",
        "push = true\ndestination = [{ url = \"http://h/m\", password = \"p\" }]",
    ));
    assert_eq!(c.streams[0].destinations.len(), 1);
}

#[test]
fn bad_destinations_with_their_lines() {
    let bcrypt = "$2y$05$abcdefghijklmnopqrstuu5Ry4hEJ4hBqCJq0ODRb1aQ4v8NG6QTu";
    let e = errs(&one(
        "",
        &format!(
            "push = true\n\
             [[stream.destination]]\nuser = \"\"\n\
             [[stream.destination]]\nurl = \"https://h/m\"\npassword = \"{bcrypt}\"\nretry_limit = 0\n\
             [[stream.destination]]\nurl = \"http://u:TOPSECRET@h/m\"\npassword = \"p\"\ncolour = 1\n\
             [[stream.destination]]\nurl = \"http://h/\"\npassword = \"p\"\nlegacy_source = \"yes\"\n"
        ),
    ));
    has(
        &e,
        &[
            "Some(5): stream #1 destination #1 url: missing: url = \"http://host:port/mount\"",
            "Some(5): stream #1 destination #1 password: missing: password",
            "Some(6): stream #1 destination #1 user: invalid value \"\": must not be empty",
            "Some(8): stream #1 destination #2 url: invalid value \"https://h/m\": https://",
            "Some(9): stream #1 destination #2 password: the password is a bcrypt hash, but ringcast sends",
            "Some(10): stream #1 destination #2 retry_limit: invalid value 0: must be at least 1",
            "Some(12): stream #1 destination #3 url: invalid value \"http://u:<secret>@h/m\": has credentials",
            "Some(14): stream #1 destination #3 colour: unknown setting",
            "Some(16): stream #1 destination #4 url: invalid value \"http://h/\": needs the mount",
            "Some(18): stream #1 destination #4 legacy_source: must be true or false",
        ],
    );
    assert!(!e.contains("TOPSECRET") && !e.contains(bcrypt), "{e}");
    let e = errs(&one("", "push = true\ndestination = 3"));
    has(
        &e,
        &["Some(5): stream #1 destination: must be [[stream.destination]] tables, not integer"],
    );
}

#[test]
fn stream_info() {
    let s = first(&one(
        "",
        "push = true\nname = \"Radio One\"\ndescription = \"Music, all day\"\ngenre = \"Jazz\"\n\
         url = \"https://radio.example/\"\nbitrate = 128\npublic = true",
    ));
    assert_eq!(
        s.info,
        StreamInfo {
            name: Some("Radio One".into()),
            description: Some("Music, all day".into()),
            genre: Some("Jazz".into()),
            url: Some("https://radio.example/".into()),
            bitrate: Some(128),
            public: Some(true),
        }
    );
    assert_eq!(first(&one("", "push = true")).info, StreamInfo::default());
    assert_eq!(
        first(&one("", "push = true\npublic = false")).info.public,
        Some(false)
    );
    let e = errs(&one(
        "",
        "push = true\nname = \"a\\r\\nSet-Cookie: x\"\ngenre = \"\"\nbitrate = 0\n\
         description = \"tab\\tis fine\"\nurl = 5",
    ));
    has(
        &e,
        &[
            "Some(5): stream #1 name: invalid value \"a\\r\\nSet-Cookie: x\": control characters",
            "Some(6): stream #1 genre: invalid value \"\": must not be empty",
            "Some(7): stream #1 bitrate: invalid value 0: must be at least 1",
            "Some(9): stream #1 url: must be a string",
        ],
    );
    assert!(!e.contains("description"), "{e}");
    let e = errs(&one("", "push = true\nbitrate = 100001"));
    has(
        &e,
        &["bitrate: invalid value 100001: must be at most 100000"],
    );
    assert_eq!(
        first(&one("", "push = true\nbitrate = 100000"))
            .info
            .bitrate,
        Some(100000)
    );
}

#[test]
fn icy_metaint() {
    assert_eq!(first(&one("", "push = true")).icy_metaint, 16000);
    assert_eq!(
        first(&one("", "push = true\nicy_metaint = 0")).icy_metaint,
        0
    );
    let s = first(&one("", "push = true\nicy_metaint = 1000000"));
    assert_eq!(s.icy_metaint, 1_000_000);
    let e = errs(&one("", "push = true\nicy_metaint = 1000001"));
    has(
        &e,
        &["Some(5): stream #1 icy_metaint: invalid value 1000001: must be at most 1000000"],
    );
    assert_eq!(stream(&["-icy-metaint", "8192"]).icy_metaint, 8192);
    assert_eq!(
        run_env(&[], &[("RINGCAST_ICY_METAINT", "0")]).streams[0].icy_metaint,
        0
    );
    assert_eq!(err_flag(&["-icy-metaint", "-1"]), "icy-metaint");
}

#[test]
fn titles_from_a_file_or_a_command() {
    let s = first(&one("", "exec = [\"cat\"]\ntitle_file = \"/run/title\""));
    assert_eq!(s.title_file, Some(PathBuf::from("/run/title")));
    let s = first(&one(
        "",
        "demo = true\ntitle_command = [\"sh\", \"-c\", \"tail -f x\"]",
    ));
    assert_eq!(
        s.title_command,
        Some(vec!["sh".into(), "-c".into(), "tail -f x".into()])
    );
    let e = errs(&one(
        "",
        "path = \"/x\"\ntitle_file = \"/t\"\ntitle_command = [\"x\"]",
    ));
    has(
        &e,
        &["Some(6): stream #1 title_command: cannot be used together with title_file"],
    );
    let e = errs(&one("", "push = true\ntitle_file = \"/t\""));
    has(
        &e,
        &["Some(5): stream #1 title_file: only for exec, path and demo sources"],
    );
    let e = errs(&one("", "relay = \"http://h/x\"\ntitle_command = [\"x\"]"));
    has(
        &e,
        &["stream #1 title_command: only for exec, path and demo sources"],
    );
    let e = errs(&one(
        "",
        "path = \"/x\"\ntitle_command = []\ntitle_file = \"\"",
    ));
    has(
        &e,
        &[
            "title_command: needs a command",
            "title_file: invalid value \"\": must not be empty",
        ],
    );
    let e = errs(&one("", "path = \"/x\"\ntitle_command = \"x\""));
    has(&e, &["title_command: must be a list of strings"]);
}

#[test]
fn cors_origin() {
    assert_eq!(
        first(&one("", "push = true")).cors_origin.as_deref(),
        Some("*")
    );
    assert_eq!(
        first(&one("", "push = true\ncors_origin = \"\"")).cors_origin,
        None
    );
    let s = first(&one("", "push = true\ncors_origin = \"https://a.example\""));
    assert_eq!(s.cors_origin.as_deref(), Some("https://a.example"));
    let e = errs(&one("", "push = true\ncors_origin = \"a\\nb\""));
    has(
        &e,
        &["Some(5): stream #1 cors_origin: invalid value \"a\\nb\": control characters"],
    );
    assert_eq!(stream(&["-cors-origin", ""]).cors_origin, None);
    assert_eq!(
        stream(&["-cors-origin=null"]).cors_origin.as_deref(),
        Some("null")
    );
    assert_eq!(stream(&[]).cors_origin.as_deref(), Some("*"));
    let c = run_env(&[], &[("RINGCAST_CORS_ORIGIN", "https://b.example")]);
    assert_eq!(
        c.streams[0].cors_origin.as_deref(),
        Some("https://b.example")
    );
}

#[test]
fn extra_headers() {
    let s = first(&one(
        "",
        "push = true\n[stream.headers]\nX-Station = \"one\"\n\"X-Frame-Options\" = \"DENY\"\nSet-Cookie = \"a=b\"",
    ));
    let mut h = s.extra_headers;
    h.sort();
    assert_eq!(
        h,
        vec![
            ("Set-Cookie".into(), "a=b".into()),
            ("X-Frame-Options".into(), "DENY".into()),
            ("X-Station".into(), "one".into()),
        ]
    );
    let s = first(&one("", "push = true\nheaders = { X-A = \"1\" }"));
    assert_eq!(s.extra_headers, vec![("X-A".to_owned(), "1".to_owned())]);
    let e = errs(&one(
        "",
        "push = true\n[stream.headers]\ncontent-type = \"x\"\nAccess-Control-Allow-Origin = \"*\"\n\
         Sec-WebSocket-Accept = \"x\"\nICY-METAINT = \"1\"\nicy-name = \"n\"\nServer = \"x\"\n\
         \"Bad Name\" = \"x\"\nX-A = \"a\\u0000b\"\nX-B = 1\nX-C = \"ok\"\nx-c = \"again\"\nX-D = \"\"",
    ));
    has(
        &e,
        &[
            "Some(6): stream #1 headers.content-type: ringcast sets this header: use content_type",
            "Some(7): stream #1 headers.Access-Control-Allow-Origin: ringcast sets the CORS headers: use cors_origin",
            "Some(8): stream #1 headers.Sec-WebSocket-Accept: ringcast sets this header itself",
            "Some(9): stream #1 headers.ICY-METAINT: ringcast sets this header: use icy_metaint",
            "Some(10): stream #1 headers.icy-name: ringcast sets this header: use name",
            "Some(11): stream #1 headers.Server: ringcast sets this header itself",
            "Some(12): stream #1 headers.Bad Name: is not a valid header name",
            "Some(13): stream #1 headers.X-A: invalid value \"a\\0b\": control characters",
            "Some(14): stream #1 headers.X-B: must be a string, not integer",
            "Some(16): stream #1 headers.x-c: is given twice",
            "Some(17): stream #1 headers.X-D: invalid value \"\": must not be empty",
        ],
    );
    assert!(!e.contains("X-C:"), "{e}");
    let e = errs(&one("", "push = true\nheaders = [\"X-A: 1\"]"));
    has(
        &e,
        &["stream #1 headers: must be a table of Name = \"value\""],
    );
}

const BCRYPT: &str = "$2y$05$abcdefghijklmnopqrstuu5Ry4hEJ4hBqCJq0ODRb1aQ4v8NG6QTu";

#[test]
fn users() {
    let c = ok(&format!(
        "[[user]]\nname = \"dj\"\npassword = \"{BCRYPT}\"\nroles = [\"source\"]\nmounts = [\"/a\"]\n\
         [[user]]\nname = \"admin\"\npassword = \"plain pass\"\nroles = [\"admin\", \"relay\", \"admin\"]\n\
         [[user]]\nname = \"dj\"\npassword = \"$2b$10$abcdefghijklmnopqrstuu5Ry4hEJ4hBqCJq0ODRb1aQ4v8NG6QTu\"\n\
         roles = [\"source\"]\nmounts = [\"/b\"]\n\
         [[stream]]\nmount = \"/a\"\npush = true\n[[stream]]\nmount = \"/b\"\npush = true\n"
    ));
    assert_eq!(
        c.users,
        vec![
            User {
                name: "dj".into(),
                password: Secret::Bcrypt(BCRYPT.into()),
                roles: vec![Role::Source],
                mounts: vec!["/a".into()],
            },
            User {
                name: "admin".into(),
                password: Secret::Plain("plain pass".into()),
                roles: vec![Role::Admin, Role::Relay],
                mounts: vec![],
            },
            User {
                name: "dj".into(),
                password: Secret::Bcrypt(
                    "$2b$10$abcdefghijklmnopqrstuu5Ry4hEJ4hBqCJq0ODRb1aQ4v8NG6QTu".into()
                ),
                roles: vec![Role::Source],
                mounts: vec!["/b".into()],
            },
        ]
    );
    // $2a$ is bcrypt too; a $ elsewhere is a plain password.
    let c = ok(&one(
        "[[user]]\nname = \"x\"\npassword = \"$2a$31$abcdefghijklmnopqrstuu5Ry4hEJ4hBqCJq0ODRb1aQ4v8NG6QTu\"\nroles = [\"source\"]\n\
         [[user]]\nname = \"y\"\npassword = \"$1$abc\"\nroles = [\"source\"]\n",
        "push = true",
    ));
    assert!(matches!(c.users[0].password, Secret::Bcrypt(_)));
    assert_eq!(c.users[1].password, Secret::Plain("$1$abc".into()));
    assert!(ok(&one("", "push = true")).users.is_empty());
}

#[test]
fn bad_users_with_their_lines() {
    let e = errs(&one(
        "[[user]]\npassword = \"\"\nroles = []\n\
         [[user]]\nname = \"a:b\"\npassword = \"$2y$05$tooShort\"\nroles = [\"dj\", \"source\"]\nmounts = [\"/a\", \"/nope\"]\n\
         [[user]]\nname = \"c\"\npassword = \"p\"\npassword_file = \"/f\"\nroles = \"source\"\n\
         [[user]]\nname = \"d\"\nroles = [\"source\"]\ncolour = 1\n\
         [[user]]\nname = \"e\"\npassword = \"$2y$99$abcdefghijklmnopqrstuu5Ry4hEJ4hBqCJq0ODRb1aQ4v8NG6QTu\"\n",
        "push = true",
    ));
    has(
        &e,
        &[
            "Some(1): user #1 name: missing: name",
            "Some(2): user #1 password: the password must not be empty",
            "Some(3): user #1 roles: needs at least one role",
            "Some(5): user #2 name: invalid value \"a:b\": must not contain ':'",
            "Some(6): user #2 password: the password starts like a bcrypt hash but is not one",
            "Some(7): user #2 roles: invalid value \"dj\": a role is source, admin or relay",
            "Some(8): user #2 mounts: invalid value \"/nope\": names no configured mount",
            "Some(12): user #3 password_file: cannot be used together with password",
            "Some(13): user #3 roles: must be a list of strings",
            "Some(14): user #4 password: missing: password",
            "Some(17): user #4 colour: unknown setting",
            "Some(20): user #5 password: the password starts like a bcrypt hash",
            "Some(18): user #5 roles: missing: roles",
        ],
    );
    assert!(!e.contains("tooShort"), "{e}");
    let e = errs(&one(
        "[[user]]\nname = \"x\"\npassword = \"p\"\nroles = [\"admin\"]\nmounts = []",
        "push = true",
    ));
    assert_eq!(
        e,
        "Some(5): user #1 mounts: names no mount: leave mounts out for every mount"
    );
    let e = errs(&one("user = 3", "push = true"));
    has(&e, &["Some(1): user: must be [[user]] tables, not integer"]);
}

#[test]
fn a_user_name_twice_for_the_same_mounts_is_an_error() {
    let two = |m1: &str, m2: &str| {
        format!(
            "[[user]]\nname = \"dj\"\npassword = \"a\"\nroles = [\"source\"]\n{m1}\n\
             [[user]]\nname = \"dj\"\npassword = \"b\"\nroles = [\"admin\"]\n{m2}\n\
             [[stream]]\nmount = \"/a\"\npush = true\n[[stream]]\nmount = \"/b\"\npush = true\n"
        )
    };
    let e = errs(&two("", ""));
    assert_eq!(
        e,
        "Some(7): user #2 name: user #1 has the same name for some of the same mounts: give each user name once per mount"
    );
    let e = errs(&two("mounts = [\"/a\"]", ""));
    has(&e, &["user #2 name: user #1 has the same name"]);
    let e = errs(&two("mounts = [\"/a\", \"/b\"]", "mounts = [\"/b\"]"));
    has(&e, &["user #2 name: user #1 has the same name"]);
    assert_eq!(
        ok(&two("mounts = [\"/a\"]", "mounts = [\"/b\"]"))
            .users
            .len(),
        2
    );
}

#[test]
fn password_files_are_read_at_every_load() {
    let dir = std::env::temp_dir().join(format!("ringcast-config-pw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pw = dir.join("pw");
    std::fs::write(&pw, "first secret\nsecond line\n").unwrap();
    let conf = dir.join("ringcast.toml");
    let text = format!(
        "[[user]]\nname = \"dj\"\npassword_file = {:?}\nroles = [\"source\"]\n\
         [[stream]]\nmount = \"/a\"\npush = true\n\
         [[stream.destination]]\nurl = \"http://h/m\"\npassword_file = {:?}\n\
         [[mirror]]\norigin = \"http://m\"\nuser = \"relay\"\npassword_file = {:?}\n",
        pw.display(),
        pw.display(),
        pw.display()
    );
    std::fs::write(&conf, &text).unwrap();
    let load = || file::load(&conf, &Layer::default(), &env::Environment::default());
    let c = load().unwrap();
    let first = Secret::Plain("first secret".into());
    assert_eq!(c.users[0].password, first);
    assert_eq!(c.streams[0].destinations[0].password, first);
    assert_eq!(c.mirrors[0].password, Some(first));
    // A reload reads it again.
    std::fs::write(&pw, format!("{BCRYPT}\r\n")).unwrap();
    let e = load().unwrap_err().to_string();
    // A bcrypt hash will do for a user, not for a password ringcast sends.
    assert!(
        e.contains(":10: stream #1 destination #1 password_file: the password (the first line of"),
        "{e}"
    );
    assert!(e.contains(":14: mirror #1 password_file:"), "{e}");
    assert!(!e.contains(":3:"), "{e}");
    std::fs::write(&pw, "\nx").unwrap();
    let e = load().unwrap_err().to_string();
    assert!(
        e.contains(":3: user #1 password_file: the password (the first line of"),
        "{e}"
    );
    assert!(e.contains("must not be empty"), "{e}");
    std::fs::remove_file(&pw).unwrap();
    let e = load().unwrap_err().to_string();
    assert!(e.contains(":3: user #1 password_file: cannot read"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn health_mounts() {
    let c = ok(&one("health_mounts = [\"/a\"]", "push = true"));
    assert_eq!(c.health_mounts, vec!["/a".to_owned()]);
    assert!(ok(&one("", "push = true")).health_mounts.is_empty());
    let e = errs(&one("health_mounts = [\"/a\", \"/b\"]", "push = true"));
    assert_eq!(
        e,
        "Some(1): health_mounts: invalid value \"/b\": names no configured mount"
    );
    let e = errs(&one("health_mounts = \"/a\"", "push = true"));
    has(&e, &["Some(1): health_mounts: must be a list of strings"]);
    // A stream with a problem of its own still counts as configured.
    let e = errs(&one(
        "health_mounts = [\"/a\"]",
        "push = true\nframe_bytes = 0",
    ));
    assert!(!e.contains("health_mounts"), "{e}");
}

#[test]
fn mirrors() {
    let c = ok(&one(
        "[[mirror]]\norigin = \"http://master.example:8000\"\nuser = \"relay\"\npassword = \"pw\"\n\
         interval = \"30s\"\nframer = \"aac\"\nsource_buffer = 100\nburst_ms = 2000\non_demand = true\n\
         icy_metaint = 0\ncors_origin = \"\"\nmax_clients = 50\n\
         [[mirror]]\norigin = \"http://[::1]/\"\n",
        "push = true",
    ));
    let m = &c.mirrors[0];
    assert_eq!(m.origin, "http://master.example:8000");
    assert_eq!(m.user.as_deref(), Some("relay"));
    assert_eq!(m.password, Some(Secret::Plain("pw".into())));
    assert_eq!(m.interval, Duration::from_secs(30));
    let t = &m.template;
    assert_eq!(t.source, SourceSpec::Relay(vec![]));
    assert_eq!(t.mount, None);
    assert_eq!(
        (t.framer, t.frame_bytes, t.content_type.as_str()),
        (FramerKind::Aac, 8191, "audio/aac")
    );
    assert_eq!(
        (t.source_buffer, t.max_clients, t.icy_metaint),
        (100, 50, 0)
    );
    assert_eq!(t.burst, Some(Duration::from_secs(2)));
    assert!(t.on_demand && t.cors_origin.is_none());
    let m = &c.mirrors[1];
    assert_eq!(m.origin, "http://[::1]:80");
    assert_eq!((m.user.as_ref(), m.password.as_ref()), (None, None));
    assert_eq!(m.interval, Duration::from_secs(120));
    // The default framer of a mirror is mp3.
    assert_eq!(
        (m.template.framer, m.template.frame_bytes),
        (FramerKind::Mp3, 2881)
    );
}

#[test]
fn bad_mirrors_with_their_lines() {
    let e = errs(&one(
        "[[mirror]]\ninterval = \"0.5s\"\nframer = \"auto\"\npath = \"/x\"\nmount = \"/m\"\ncolour = 1\n\
         [[mirror]]\norigin = \"https://m\"\nuser = \"relay\"\n\
         [[mirror]]\norigin = \"http://m/streams\"\npassword = \"pw\"\n\
         [[mirror]]\norigin = \"http://relay:SECRETPW@m\"\n",
        "push = true",
    ));
    has(
        &e,
        &[
            "Some(1): mirror #1 origin: missing: origin = \"http://host:port\"",
            "Some(2): mirror #1 interval: invalid value \"0.5s\": must be at least 1s",
            "Some(3): mirror #1 framer: invalid value \"auto\": \"auto\" (from the upstream's Content-Type) is not supported yet",
            "Some(4): mirror #1 path: is a setting of [[stream]], not of [[mirror]]",
            "Some(5): mirror #1 mount: is a setting of [[stream]], not of [[mirror]]",
            "Some(6): mirror #1 colour: unknown setting",
            "Some(8): mirror #2 origin: invalid value \"https://m\": https://",
            // A missing key is reported at its table's header.
            "Some(7): mirror #2 password: missing: password",
            "Some(11): mirror #3 origin: invalid value \"http://m/streams\": must be the server only",
            "Some(10): mirror #3 user: missing: user",
            "Some(14): mirror #4 origin: invalid value \"http://relay:<secret>@m\": has credentials",
        ],
    );
    assert!(!e.contains("SECRETPW"), "{e}");
}

#[test]
fn channels() {
    let c = ok(&one("", "push = true"));
    assert_eq!(c.channels, Channels::off());
    let c = ok(&one(
        "[channels]\nmax_channels = 16\nkeys = [\"abc\", \"k_2-x\"]\nsource_buffer = 32\n",
        "push = true",
    ));
    let ch = &c.channels;
    assert_eq!(ch.max_channels, 16);
    assert_eq!(
        ch.keys,
        vec![Secret::Plain("abc".into()), Secret::Plain("k_2-x".into())]
    );
    let t = &ch.template;
    assert_eq!(t.source, SourceSpec::Push);
    assert_eq!(
        (
            t.framer,
            t.frame_bytes,
            t.source_buffer,
            t.content_type.as_str()
        ),
        (FramerKind::Raw, 4096, 32, "application/octet-stream")
    );
    let c = ok(&one(
        "[channels]\nmax_channels = 1024\nframer = \"ogg\"\ncontent_type = \"audio/webm\"\n",
        "push = true",
    ));
    assert_eq!(c.channels.template.framer, FramerKind::Ogg);
    assert_eq!(c.channels.template.content_type, "audio/webm");
    assert!(c.channels.keys.is_empty());
    // A server of channels only: no [[stream]] needed (it was refused).
    let c = ok("listen = \"127.0.0.1:8000\"\n[channels]\nmax_channels = 4\n");
    assert!(c.streams.is_empty());
    assert_eq!(c.channels.max_channels, 4);
    assert!(errs("listen = \"127.0.0.1:8000\"\n").contains("no [[stream]] configured"));
}

#[test]
fn bad_channels_never_show_their_keys() {
    let long = "k".repeat(129);
    let e = errs(&one(
        &format!(
            "[channels]\nmax_channels = 1025\nkeys = [\"ok\", \"UPPERSECRET\", \"\", \"{long}\"]\nmount = \"/x\"\nframe_bytes = 0\n"
        ),
        "push = true",
    ));
    has(
        &e,
        &[
            "Some(2): channels max_channels: invalid value 1025: must be at most 1024",
            "Some(3): channels keys: key #2 must be 1 to 128 characters",
            "Some(3): channels keys: key #3 must",
            "Some(3): channels keys: key #4 must",
            "Some(4): channels mount: is a setting of [[stream]], not of [channels]",
            "Some(5): channels frame_bytes: invalid value 0",
        ],
    );
    assert!(!e.contains("UPPERSECRET") && !e.contains(&long), "{e}");
    let e = errs(&one("channels = 1", "push = true"));
    has(
        &e,
        &["Some(1): channels: must be a [channels] table, not integer"],
    );
}

#[test]
fn stream_settings_at_the_top_level_say_where_they_go() {
    let e = errs(&one("framer = \"mp3\"\npush = true", "push = true"));
    has(
        &e,
        &[
            "Some(1): framer: is a per-stream setting: set it in each [[stream]]",
            "Some(2): push: is a per-stream setting",
        ],
    );
}

#[test]
fn no_secret_in_any_message_or_debug_output() {
    // Every secret of a file that also has problems elsewhere.
    let text = format!(
        "[[user]]\nname = \"dj\"\npassword = \"SECRET-A\"\nroles = [\"source\"]\n\
         [[user]]\nname = \"dj\"\npassword = \"{BCRYPT}\"\nroles = [\"bogus\"]\n\
         [channels]\nmax_channels = 1\nkeys = [\"SECRET-B\", \"secret-c\"]\n\
         [[mirror]]\norigin = \"http://m\"\nuser = \"u\"\npassword = \"SECRET-D\"\ninterval = \"0\"\n\
         [[stream]]\nmount = \"/a\"\nrelay = [\"http://u:SECRET-E@h:0/x\", \"http://u:SECRET-F@h/x\"]\n\
         [[stream.destination]]\nurl = \"http://h/m\"\npassword = \"SECRET-G\"\nretry_limit = 0\n\
         [[stream]]\nmount = \"/b\"\nrelay = \"http://u:SECRET-H@h/x\"\n\
         [[stream.destination]]\nurl = \"http://h/m\"\npassword = \"SECRET-I\"\n"
    );
    let e = errs(&text);
    for secret in ["secret-", &BCRYPT[7..]] {
        assert!(
            !e.to_lowercase().contains(&secret.to_lowercase()),
            "{secret}: {e}"
        );
    }
    let good = text
        .replace("\"bogus\"", "\"admin\"")
        .replace(
            "name = \"dj\"\npassword = \"$",
            "name = \"dj2\"\npassword = \"$",
        )
        .replace("SECRET-B", "secret-b")
        .replace("h:0/x", "h/x")
        .replace("interval = \"0\"", "interval = \"1s\"")
        .replace("retry_limit = 0", "retry_limit = 1");
    let c = ok(&good);
    let debug = format!("{c:?} {:#?}", c);
    for secret in ["SECRET", "secret-b", "secret-c", &BCRYPT[7..]] {
        assert!(!debug.contains(secret), "{secret} in {debug}");
    }
    assert!(debug.contains("<secret>"));
}

#[test]
fn lines_of_tables_written_inline_are_their_keys_lines() {
    let e = errs(&one(
        "",
        "push = true\ndestination = [{ url = \"ftp://h/m\", password = \"p\" }]\n\
         headers = { Server = \"x\" }",
    ));
    has(
        &e,
        &[
            "Some(5): stream #1 destination #1 url: invalid value \"ftp://h/m\"",
            "Some(6): stream #1 headers.Server: ringcast sets this header itself",
        ],
    );
}
