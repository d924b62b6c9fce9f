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

    /// The source: a path, a command, or both (an error).
    #[derive(Debug, Clone)]
    enum Source {
        Path(&'static str),
        Exec(Vec<&'static str>),
        Both(&'static str, Vec<&'static str>),
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
        let source = prop_oneof![
            4 => path.clone().prop_map(Source::Path),
            4 => words.clone().prop_map(Source::Exec),
            1 => (path, words).prop_map(|(p, w)| Source::Both(p, w)),
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
