//! ICY titles and what browser players need (issue 14, items 1, 3 and 5):
//! `Icy-MetaData: 1` listeners get `icy-metaint: N` and a block after every
//! N audio bytes (parsed exactly here), counted per listener across burst,
//! skips, MP3 lead-ins and a fallback switch; titles from /admin/metadata
//! (credentials, charsets), a push source's client, a title file and a
//! title command; Ogg mounts get none; bad titles stay inside one
//! well-formed block; real players (mpv, VLC, FFmpeg) show a title change
//! while they play; CORS and extra headers.

mod common;
#[path = "interop/support.rs"]
mod support;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{require, system_user, wait_until, Client, Ringcast, Server, TempDir, WAIT};
use support::*;

const HEAD: &str = "listen = [\"127.0.0.1:0\"]\nflush_interval = \"0s\"\n\n";

/// Start a server with `toml` and two users: `dj` (source role for
/// `dj_mount` only) and `boss` (admin).
fn start(toml: String, dj_mount: &str) -> Server {
    let users = format!(
        "\n[[user]]\nname = \"dj\"\npassword = \"djpass\"\nroles = [\"source\"]\nmounts = [\"{dj_mount}\"]\n\n[[user]]\nname = \"boss\"\npassword = \"bosspass\"\nroles = [\"admin\"]\n"
    );
    Ringcast::new().config_toml(toml + &users).start()
}

fn dj() -> String {
    basic("dj", "djpass")
}

fn boss() -> String {
    basic("boss", "bosspass")
}

/// A raw stream of [`GEN`] frames.
fn raw_stream(mount: &str, size: usize, rate: u32, count: u64, start: u64, extra: &str) -> String {
    format!(
        "[[stream]]\nmount = \"{mount}\"\nexec = {}\nframe_bytes = {size}\n{extra}\n",
        gen_exec(size, rate, count, start)
    )
}

/// An ICY listener of `mount`: the client and its reader (after checking
/// `icy-metaint`).
fn icy_listener(addr: SocketAddr, mount: &str, metaint: usize) -> (Client, IcyReader) {
    let c = Client::request(
        addr,
        &format!("GET {mount} HTTP/1.1\r\nHost: test\r\nIcy-MetaData: 1\r\n\r\n"),
    );
    assert!(c.status_line().contains(" 200 "), "{}", c.head);
    assert_eq!(
        c.header("icy-metaint"),
        Some(metaint.to_string()),
        "{}",
        c.head
    );
    (c, IcyReader::new(metaint))
}

/// Read blocks until one carries a title (at most `max` blocks); it.
fn next_title(c: &mut impl BodyRead, r: &mut IcyReader, audio: &mut Vec<u8>, max: usize) -> Block {
    for _ in 0..max {
        let b = r.next_block(c, audio);
        if !b.payload.is_empty() {
            return b;
        }
    }
    panic!("no title in {max} blocks")
}

/// Read blocks until one carries `title` (bytes); every block is checked.
fn wait_title(
    c: &mut impl BodyRead,
    r: &mut IcyReader,
    audio: &mut Vec<u8>,
    title: &[u8],
) -> Block {
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(
            Instant::now() < deadline,
            "title {:?} never came; last blocks {:?}",
            String::from_utf8_lossy(title),
            r.blocks.iter().rev().take(3).collect::<Vec<_>>()
        );
        let b = r.next_block(c, audio);
        if b.title().as_deref() == Some(title) {
            return b;
        }
    }
}

fn assert_consecutive(nums: &[u64], what: &str) {
    common::assert_consecutive(nums, what);
}

#[test]
fn blocks_come_every_metaint_audio_bytes_with_the_current_title_first() {
    let toml = format!(
        "{HEAD}{}{}",
        raw_stream(
            "/x",
            100,
            200,
            0,
            0,
            "icy_metaint = 250\nburst_bytes = 1000"
        ),
        raw_stream("/d", 100, 400, 0, 0, "")
    );
    let s = start(toml, "/x");
    assert!(set_title(s.addr, "/x", "song=First+Song", &dj()).contains(" 200 "));

    let (mut c, mut r) = icy_listener(s.addr, "/x", 250);
    let mut plain = s.get_path("/x");
    assert_eq!(plain.header("icy-metaint"), None, "{}", plain.head);
    let mut zero = Client::request(
        s.addr,
        "GET /x HTTP/1.1\r\nHost: test\r\nIcy-MetaData: 0\r\n\r\n",
    );
    assert_eq!(zero.header("icy-metaint"), None, "{}", zero.head);

    let mut audio = Vec::new();
    // The first block, after exactly 250 audio bytes, carries the title.
    let first = r.next_block(&mut c, &mut audio);
    assert_eq!(first.at, 250);
    assert_eq!(first.title().as_deref(), Some(&b"First Song"[..]));
    let expected = b"StreamTitle='First Song';";
    assert_eq!(&first.payload[..expected.len()], expected);
    assert_eq!(first.payload.len(), 32, "25 bytes padded to 32");
    // Nothing changed: single zero bytes.
    for _ in 0..20 {
        let b = r.next_block(&mut c, &mut audio);
        assert!(b.payload.is_empty(), "unchanged title sent again: {b:?}");
    }
    // A new title with a URL, by the admin.
    assert!(set_title(
        s.addr,
        "/x",
        "song=Second&url=http%3A%2F%2Fradio.example%2F",
        &boss()
    )
    .contains(" 200 "));
    let b = next_title(&mut c, &mut r, &mut audio, 400);
    let text = b"StreamTitle='Second';StreamUrl='http://radio.example/';";
    assert_eq!(&b.payload[..text.len()], text);
    assert_eq!(b.payload.len(), text.len().div_ceil(16) * 16);
    for _ in 0..5 {
        assert!(r.next_block(&mut c, &mut audio).payload.is_empty());
    }
    // Every block sat after a multiple of 250 audio bytes, and the audio
    // between them is whole consecutive frames.
    for (i, b) in r.blocks.iter().enumerate() {
        assert_eq!(b.at, 250 * (i as u64 + 1));
    }
    let whole = audio.len() / 100 * 100;
    let nums = frames_of(&audio[..whole], 100);
    assert_consecutive(&nums, "ICY listener's audio");
    eprintln!(
        "ICY listener: {} blocks, {} audio bytes, frames {}..{}",
        r.blocks.len(),
        audio.len(),
        nums[0],
        nums[nums.len() - 1]
    );
    // The plain listeners got frames and nothing else.
    for p in [&mut plain, &mut zero] {
        let body = p.read_body(100 * 100, WAIT);
        assert_increasing(&frames_of(&body, 100), "plain listener (read late)");
    }
    // The default metaint is 16000.
    let (mut d, mut dr) = icy_listener(s.addr, "/d", 16000);
    let mut daudio = Vec::new();
    let b = dr.next_block(&mut d, &mut daudio);
    assert_eq!(b.at, 16000);
    assert_consecutive(&frames_of(&daudio, 100), "/d audio");
    assert_eq!(metric(s.addr, "shard_title_updates_total"), 2);
}

#[test]
fn title_updates_need_source_or_admin_credentials_and_honour_charset() {
    let toml = format!(
        "{HEAD}{}{}",
        raw_stream("/x", 100, 400, 0, 0, "icy_metaint = 500"),
        raw_stream("/y", 100, 400, 0, 0, "icy_metaint = 500")
    );
    let s = start(toml, "/x");
    let refused = [
        ("/x", String::new()),
        ("/x", basic("dj", "wrong")),
        ("/x", basic("nobody", "djpass")),
        ("/y", dj()),
    ];
    for (mount, auth) in &refused {
        let line = set_title(s.addr, mount, "song=nope", auth);
        assert!(line.contains(" 401 "), "{mount} {auth:?}: {line}");
    }
    let (line, _, body) = get_with(
        s.addr,
        "/admin/metadata?mount=%2Fnone&mode=updinfo&song=a",
        &boss(),
    );
    assert!(line.contains(" 404 "), "{line}");
    assert!(String::from_utf8_lossy(&body).contains("<return>0</return>"));
    assert_eq!(metric(s.addr, "shard_title_updates_total"), 0);

    let (mut c, mut r) = icy_listener(s.addr, "/x", 500);
    let mut audio = Vec::new();
    let cases: [(&str, &str, &[u8], &str); 4] = [
        // Latin-1 by default: %E9 is é, sent as the byte E9.
        ("song=Caf%E9+1", "dj", b"Caf\xe9 1", "Café 1"),
        // UTF-8 with charset=UTF-8: still é, sent as Latin-1 (it fits).
        (
            "song=Caf%C3%A9+2&charset=UTF-8",
            "boss",
            b"Caf\xe9 2",
            "Café 2",
        ),
        // The same bytes without charset are two Latin-1 characters.
        ("song=Caf%C3%A9+3", "dj", b"Caf\xc3\xa9 3", "CafÃ© 3"),
        // What Latin-1 cannot hold goes as UTF-8.
        (
            "song=%E6%9D%B1%E4%BA%AC+4&charset=utf-8",
            "boss",
            "東京 4".as_bytes(),
            "東京 4",
        ),
    ];
    for (query, who, bytes, text) in cases {
        let auth = if who == "dj" { dj() } else { boss() };
        assert!(set_title(s.addr, "/x", query, &auth).contains(" 200 "));
        let b = wait_title(&mut c, &mut r, &mut audio, bytes);
        eprintln!("{query} -> block {:?}", String::from_utf8_lossy(&b.payload));
        let (_, body) = s.fetch("/status-json.xsl");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let src = &v["icestats"]["source"];
        let x = src
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|m| m["listenurl"].as_str().unwrap().ends_with("/x"))
            })
            .unwrap_or(src);
        assert_eq!(x["title"], text, "{body}");
    }
    // /y never got a title: its listener's first block is an empty title.
    let (mut y, mut yr) = icy_listener(s.addr, "/y", 500);
    let mut yaudio = Vec::new();
    let b = yr.next_block(&mut y, &mut yaudio);
    assert_eq!(b.title().unwrap_or_default(), b"");
    assert_eq!(metric(s.addr, "shard_title_updates_total"), 4);
    assert_consecutive(&frames_of(&audio[..audio.len() / 100 * 100], 100), "/x");
}

#[test]
fn bad_titles_stay_inside_one_well_formed_block_and_go_nowhere_else() {
    let toml = format!(
        "{HEAD}{}",
        raw_stream("/x", 100, 400, 0, 0, "icy_metaint = 300")
    );
    let s = start(toml, "/x");
    let (mut c, mut r) = icy_listener(s.addr, "/x", 300);
    let mut plain = s.get_path("/x");
    let mut audio = Vec::new();
    let long_x = "x".repeat(5000);
    let cases: Vec<(String, &str)> = vec![
        ("Evil';StreamUrl='http://bad.example/';".into(), "injection"),
        ("It's \"quoted\" 'twice'".into(), "quotes"),
        ("Line1\r\nX-Injected: yes\r\n\r\nbody".into(), "crlf"),
        (long_x.clone(), "5000 bytes"),
        // 5,000 bytes in an 8 KiB request: 700 × é (2 bytes each in
        // UTF-8) and 3,600 × a.
        (
            "é".repeat(700) + &"a".repeat(3600),
            "5000 bytes of Latin-1 as UTF-8",
        ),
    ];
    for (title, what) in &cases {
        let query = format!("song={}&charset=UTF-8", pct(title.as_bytes()));
        assert!(
            set_title(s.addr, "/x", &query, &dj()).contains(" 200 "),
            "{what}"
        );
        let b = next_title(&mut c, &mut r, &mut audio, 400);
        let t = b.title().unwrap();
        eprintln!(
            "{what}: block of {} bytes, title of {} bytes: {:?}",
            b.payload.len(),
            t.len(),
            String::from_utf8_lossy(&t[..t.len().min(60)])
        );
        assert!(b.payload.len() <= 255 * 16);
        assert!(
            !t.contains(&b'\r') && !t.contains(&b'\n') && !t.contains(&0),
            "{what}"
        );
        assert!(find(&t, b"';").is_none(), "{what}");
        match *what {
            "injection" => {
                assert!(find(&b.payload, b"StreamUrl=").is_some_and(|i| i < t.len() + 13));
            }
            "quotes" => assert_eq!(t, title.as_bytes()),
            "crlf" => assert_eq!(t, b"Line1X-Injected: yesbody"),
            "5000 bytes" => {
                assert!(
                    t.len() >= 1000 && t.iter().all(|&x| x == b'x'),
                    "{}",
                    t.len()
                )
            }
            _ => {
                assert_eq!(&t[..700], &[0xe9; 700][..], "é as Latin-1");
                assert!(
                    t.len() > 1000 && t[700..].iter().all(|&x| x == b'a'),
                    "{}",
                    t.len()
                )
            }
        }
        // A new listener's head carries nothing of the title.
        let fresh = s.get_path("/x");
        assert!(!fresh.head.contains("X-Injected"), "{}", fresh.head);
        assert!(!fresh.head.contains("body"), "{}", fresh.head);
    }
    // The JSON status holds the title as a JSON string.
    let (_, body) = s.fetch("/status-json.xsl");
    let v: serde_json::Value = serde_json::from_str(&body).expect("status-json.xsl is JSON");
    assert!(v["icestats"]["source"]["title"]
        .as_str()
        .unwrap()
        .starts_with("éé"));
    // The listeners' audio: whole consecutive frames, nothing injected.
    let whole = audio.len() / 100 * 100;
    assert_consecutive(&frames_of(&audio[..whole], 100), "ICY listener");
    let body = plain.read_body(400 * 100, WAIT);
    assert_increasing(&frames_of(&body, 100), "plain listener (read late)");
}

#[test]
fn a_long_utf8_title_is_cut_at_a_character_and_keeps_its_closing_quote() {
    // 1,700 × 3 bytes = 5,100 bytes of UTF-8 that Latin-1 cannot hold, from
    // a title file (an 8 KiB request cannot carry it percent-encoded).
    let dir = TempDir::new("long-utf8");
    let title = "東".repeat(1700);
    let file = dir.write("title.txt", format!("{title}\n"));
    let toml = format!(
        "{HEAD}{}",
        raw_stream(
            "/x",
            100,
            400,
            0,
            0,
            &format!(
                "icy_metaint = 300\ntitle_file = {}",
                toml_str(file.to_str().unwrap())
            )
        )
    );
    let s = start(toml, "/x");
    let (mut c, mut r) = icy_listener(s.addr, "/x", 300);
    let mut audio = Vec::new();
    let b = next_title(&mut c, &mut r, &mut audio, 400);
    let t = b.title().expect("a closed StreamTitle");
    let t = String::from_utf8(t).expect("the title is cut at a character");
    assert!(!t.is_empty() && t.chars().all(|ch| ch == '東'));
    eprintln!(
        "{} characters in a block of {} bytes",
        t.chars().count(),
        b.payload.len()
    );
}

#[test]
fn counting_holds_across_burst_and_skips_of_a_slow_listener() {
    // A fast source and a small ring: a reader that stops is lapped soon.
    let toml = format!(
        "{HEAD}{}",
        raw_stream(
            "/x",
            100,
            4000,
            0,
            0,
            "icy_metaint = 330\nburst_bytes = 3000\nsource_buffer = 64"
        )
    );
    let s = start(toml, "/x");
    assert!(set_title(s.addr, "/x", "song=Slow", &dj()).contains(" 200 "));
    let mut c = Slow::connect(
        s.addr,
        4096,
        b"GET /x HTTP/1.1\r\nHost: test\r\nIcy-MetaData: 1\r\n\r\n",
    );
    assert!(c.head.contains("icy-metaint: 330\r\n"), "{}", c.head);
    let mut r = IcyReader::new(330);
    let mut audio = Vec::new();
    let b = r.next_block(&mut c, &mut audio);
    assert_eq!(b.title().as_deref(), Some(&b"Slow"[..]));
    let mut skips = 0;
    for round in 0..3 {
        // Stop reading until the listener has been lapped.
        stall_for_frames(&s, 4000);
        r.read_audio(&mut c, 60_000, &mut audio);
        skips = metric(s.addr, "stream_frames_skipped_total");
        eprintln!("round {round}: {skips} frames skipped so far");
    }
    let whole = audio.len() / 100 * 100;
    let nums = frames_of(&audio[..whole], 100);
    let gaps = nums.windows(2).filter(|w| w[1] != w[0] + 1).count();
    assert!(
        gaps >= 3,
        "expected a skip per round: {}",
        common::short(&nums)
    );
    assert!(nums.windows(2).all(|w| w[1] > w[0]));
    for (i, b) in r.blocks.iter().enumerate() {
        assert_eq!(b.at, 330 * (i as u64 + 1));
    }
    // Only the first block carried the title.
    assert!(r.blocks[1..].iter().all(|b| b.payload.is_empty()));
    eprintln!(
        "slow ICY listener: {} blocks, {} audio bytes, {gaps} gaps, {skips} frames skipped",
        r.blocks.len(),
        audio.len()
    );
}

#[test]
fn counting_and_titles_follow_a_listener_to_its_fallback() {
    // /main sends 300 frames (1.5 s), then falls silent; listeners go to
    // /fb after 1 s. /fb's frames are numbered from 1,000,000.
    let toml = format!(
        "{HEAD}{}{}",
        raw_stream(
            "/main",
            100,
            200,
            300,
            0,
            "icy_metaint = 270\nfallback = \"/fb\"\nfallback_after = \"1s\""
        ),
        raw_stream("/fb", 100, 200, 0, 1_000_000, "icy_metaint = 270")
    );
    let s = start(toml, "/main");
    assert!(set_title(s.addr, "/main", "song=Main+Show", &boss()).contains(" 200 "));
    assert!(set_title(s.addr, "/fb", "song=Fallback+Loop", &boss()).contains(" 200 "));
    let (mut c, mut r) = icy_listener(s.addr, "/main", 270);
    let mut audio = Vec::new();
    let b = r.next_block(&mut c, &mut audio);
    assert_eq!(b.title().as_deref(), Some(&b"Main Show"[..]));
    // Read until /fb's frames come.
    let deadline = Instant::now() + WAIT;
    let switched_at = loop {
        assert!(Instant::now() < deadline, "never moved to /fb");
        r.read_audio(&mut c, 100, &mut audio);
        let whole = audio.len() / 100 * 100;
        if let Some(i) = frames_of(&audio[..whole], 100)
            .iter()
            .position(|&n| n >= 1_000_000)
        {
            break i as u64 * 100;
        }
    };
    // The first block after the switch carries /fb's title.
    let blocks_before = r.blocks.iter().filter(|b| b.at <= switched_at).count();
    while r.blocks.len() <= blocks_before {
        r.read_audio(&mut c, 100, &mut audio);
    }
    let after = &r.blocks[blocks_before];
    eprintln!(
        "switched after {switched_at} audio bytes; next block at {}: {:?}",
        after.at,
        after.title_text()
    );
    assert_eq!(after.title().as_deref(), Some(&b"Fallback Loop"[..]));
    r.read_audio(&mut c, 3000, &mut audio);
    for (i, b) in r.blocks.iter().enumerate() {
        assert_eq!(b.at, 270 * (i as u64 + 1));
    }
    let whole = audio.len() / 100 * 100;
    let nums = frames_of(&audio[..whole], 100);
    let k = nums.iter().position(|&n| n >= 1_000_000).unwrap();
    // Whole frames only going forward (a loaded machine may stall this
    // reader into a skip), ending with /main's last frame.
    assert_increasing(&nums[..k], "/main part");
    assert_increasing(&nums[k..], "/fb part");
    assert_eq!(nums[k - 1], 299, "the listener got /main's last frame");
}

#[test]
fn mp3_lead_ins_and_skips_keep_the_count() {
    if !require("ffmpeg") {
        return;
    }
    let dir = TempDir::new("icy-mp3");
    let mp3 = ffmpeg_tone(
        dir.path(),
        "tone.mp3",
        20,
        &[
            "-c:a",
            "libmp3lame",
            "-b:a",
            "128k",
            "-write_xing",
            "0",
            "-id3v2_version",
            "0",
        ],
    );
    let toml = format!(
        "{HEAD}[[stream]]\nmount = \"/m.mp3\"\npath = {}\nframer = \"mp3\"\nloop = true\nsource_bandwidth = 2000000\nsource_buffer = 24\nicy_metaint = 1000\n",
        toml_str(mp3.to_str().unwrap())
    );
    let s = start(toml, "/m.mp3");
    let mut c = Slow::connect(
        s.addr,
        4096,
        b"GET /m.mp3 HTTP/1.1\r\nHost: test\r\nIcy-MetaData: 1\r\n\r\n",
    );
    assert!(c.head.contains("icy-metaint: 1000\r\n"), "{}", c.head);
    let mut r = IcyReader::new(1000);
    let mut audio = Vec::new();
    r.read_audio(&mut c, 20_000, &mut audio);
    for _ in 0..3 {
        stall_for_frames(&s, 2000);
        r.read_audio(&mut c, 100_000, &mut audio);
    }
    let (n, at) = mp3_frames(&audio);
    let skipped = metric(s.addr, "stream_frames_skipped_total");
    assert!(skipped > 0, "the listener was never lapped");
    eprintln!(
        "mp3 ICY listener: {skipped} frames skipped, {} blocks, {} audio bytes, {n} whole MP3 frames",
        r.blocks.len(),
        audio.len()
    );
    assert!(
        audio.len() - at < 1500,
        "not MP3 frames after byte {at} of {}",
        audio.len()
    );
    for (i, b) in r.blocks.iter().enumerate() {
        assert_eq!(b.at, 1000 * (i as u64 + 1));
    }
}

#[test]
fn titles_from_a_title_file_and_a_title_command() {
    let dir = TempDir::new("titles");
    let file = dir.write("title.txt", "Song From A File\nignored line\n");
    let lines = dir.write("titles.log", "");
    let toml = format!(
        "{HEAD}{}{}",
        raw_stream(
            "/f",
            100,
            400,
            0,
            0,
            &format!(
                "icy_metaint = 400\ntitle_file = {}",
                toml_str(file.to_str().unwrap())
            )
        ),
        raw_stream(
            "/c",
            100,
            400,
            0,
            0,
            &format!(
                "icy_metaint = 400\ntitle_command = {}",
                toml_array(&["tail", "-n", "+1", "-F", lines.to_str().unwrap()])
            )
        )
    );
    let s = start(toml, "/f");
    let (mut f, mut fr) = icy_listener(s.addr, "/f", 400);
    let (mut c, mut cr) = icy_listener(s.addr, "/c", 400);
    let (mut fa, mut ca) = (Vec::new(), Vec::new());
    wait_title(&mut f, &mut fr, &mut fa, b"Song From A File");
    std::fs::write(&file, "Second File Song, longer\n").unwrap();
    wait_title(&mut f, &mut fr, &mut fa, b"Second File Song, longer");
    use std::io::Write as _;
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(&lines)
        .unwrap();
    log.write_all(b"Command Title One\n").unwrap();
    wait_title(&mut c, &mut cr, &mut ca, b"Command Title One");
    log.write_all("Command Title Zwei \u{e4}\n".as_bytes())
        .unwrap();
    wait_title(&mut c, &mut cr, &mut ca, b"Command Title Zwei \xe4");
}

#[test]
fn ogg_mounts_get_no_icy_blocks() {
    if !require("ffmpeg") {
        return;
    }
    let dir = TempDir::new("icy-ogg");
    let ogg = ffmpeg_tone(
        dir.path(),
        "tone.ogg",
        5,
        &["-c:a", "libvorbis", "-q:a", "2"],
    );
    let toml = format!(
        "{HEAD}[[stream]]\nmount = \"/o.ogg\"\npath = {}\nframer = \"ogg\"\nrealtime = true\nloop = true\nicy_metaint = 100\n",
        toml_str(ogg.to_str().unwrap())
    );
    let s = start(toml, "/o.ogg");
    assert!(set_title(s.addr, "/o.ogg", "song=Not+In+Band", &boss()).contains(" 200 "));
    let mut c = Client::request(
        s.addr,
        "GET /o.ogg HTTP/1.1\r\nHost: test\r\nIcy-MetaData: 1\r\n\r\n",
    );
    assert!(c.status_line().contains(" 200 "), "{}", c.head);
    assert_eq!(c.header("icy-metaint"), None, "{}", c.head);
    // Whole Ogg pages back to back: any block would break the chain.
    let mut at = 0;
    let mut body = c.read_body(27, WAIT);
    let mut pages = 0;
    while pages < 30 {
        assert_eq!(&body[at..at + 4], b"OggS", "not a page at byte {at}");
        let nseg = body[at + 26] as usize;
        if body.len() < at + 27 + nseg {
            body.extend(c.read_body(at + 27 + nseg - body.len(), WAIT));
        }
        let len: usize = body[at + 27..at + 27 + nseg]
            .iter()
            .map(|&x| x as usize)
            .sum();
        let end = at + 27 + nseg + len;
        body.extend(c.read_body(end + 27 - body.len(), WAIT));
        at = end;
        pages += 1;
    }
    assert!(find(&body, b"StreamTitle").is_none());
    eprintln!("{pages} whole Ogg pages, {at} bytes, no ICY block");
}

#[test]
fn a_push_source_client_sets_the_title_with_its_own_credentials() {
    if !require("ffmpeg") {
        return;
    }
    let toml = format!(
        "{HEAD}[[stream]]\nmount = \"/live.mp3\"\npush = true\nframer = \"mp3\"\nicy_metaint = 2000\n"
    );
    let s = start(toml, "/live.mp3");
    let mut ffmpeg = Proc::spawn(
        Command::new("ffmpeg")
            .args([
                "-hide_banner",
                "-loglevel",
                "error",
                "-re",
                "-f",
                "lavfi",
                "-i",
            ])
            .arg("sine=frequency=440:sample_rate=44100")
            .args([
                "-c:a",
                "libmp3lame",
                "-b:a",
                "128k",
                "-content_type",
                "audio/mpeg",
            ])
            .args(["-ice_name", "Pushed Show", "-f", "mp3"])
            .arg(format!("icecast://dj:djpass@{}/live.mp3", s.addr)),
    );
    s.wait_log(
        "the push source",
        |l| l.contains("source") && l.contains("/live.mp3"),
        WAIT,
    );
    let mut c = None;
    assert!(
        wait_until(WAIT, || {
            let cl = Client::request(
                s.addr,
                "GET /live.mp3 HTTP/1.1\r\nHost: test\r\nIcy-MetaData: 1\r\n\r\n",
            );
            let ok = cl.status_line().contains(" 200 ");
            if ok {
                c = Some(cl);
            }
            ok
        }),
        "the pushed mount never went live"
    );
    let mut c = c.unwrap();
    assert_eq!(c.header("icy-metaint").as_deref(), Some("2000"));
    eprintln!("icy-name of the pushed mount: {:?}", c.header("icy-name"));
    let mut r = IcyReader::new(2000);
    let mut audio = Vec::new();
    r.next_block(&mut c, &mut audio);
    // The encoder's ice-name is the mount's icy-name.
    let later = Client::request(
        s.addr,
        "GET /live.mp3 HTTP/1.1\r\nHost: test\r\nIcy-MetaData: 1\r\n\r\n",
    );
    assert_eq!(
        later.header("icy-name").as_deref(),
        Some("Pushed Show"),
        "{}",
        later.head
    );
    // The encoder's own credentials (source role for this mount).
    assert!(set_title(s.addr, "/live.mp3", "song=Pushed+Title", &dj()).contains(" 200 "));
    wait_title(&mut c, &mut r, &mut audio, b"Pushed Title");
    let (n, at) = mp3_frames(&audio);
    assert!(
        n >= 5 && audio.len() - at < 1500,
        "{n} frames, {at} of {}",
        audio.len()
    );
    ffmpeg.stop();
}

// ---------------------------------------------------------------------------
// Real players
// ---------------------------------------------------------------------------

/// A child process whose output lines are collected; killed on drop.
struct Proc {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    fn spawn(cmd: &mut Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out: Box<dyn Read + Send> = Box::new(child.stdout.take().unwrap());
        let err: Box<dyn Read + Send> = Box::new(child.stderr.take().unwrap());
        for r in [out, err] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for l in BufReader::new(r).split(b'\n').map_while(Result::ok) {
                    lines
                        .lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&l).into_owned());
                }
            });
        }
        Proc { child, lines }
    }

    /// Wait for an output line containing `text`.
    fn wait_line(&self, text: &str, timeout: Duration) -> bool {
        wait_until(timeout, || {
            self.lines.lock().unwrap().iter().any(|l| l.contains(text))
        })
    }

    fn dump(&self) -> String {
        let l = self.lines.lock().unwrap();
        l[l.len().saturating_sub(40)..].join("\n")
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A server playing a looped MP3 tone at its own pace, titled `Before`.
fn player_server(dir: &TempDir) -> Server {
    let mp3 = ffmpeg_tone(
        dir.path(),
        "tone.mp3",
        10,
        &["-c:a", "libmp3lame", "-b:a", "64k"],
    );
    let toml = format!(
        "{HEAD}[[stream]]\nmount = \"/radio.mp3\"\npath = {}\nframer = \"mp3\"\nrealtime = true\nloop = true\nicy_metaint = 4000\nname = \"Test Radio\"\n",
        toml_str(mp3.to_str().unwrap())
    );
    let s = start(toml, "/radio.mp3");
    assert!(set_title(s.addr, "/radio.mp3", "song=Before+The+Change", &boss()).contains(" 200 "));
    s
}

/// Play with `player`; see the first title, change it, see the new one.
fn title_change_seen_by(s: &Server, p: &Proc, what: &str) {
    let t0 = Instant::now();
    assert!(
        p.wait_line("Before The Change", WAIT),
        "{what} never showed the first title; its output:\n{}",
        p.dump()
    );
    let first = t0.elapsed();
    assert!(set_title(s.addr, "/radio.mp3", "song=After+The+Change", &boss()).contains(" 200 "));
    let t1 = Instant::now();
    assert!(
        p.wait_line("After The Change", WAIT),
        "{what} never showed the new title; its output:\n{}",
        p.dump()
    );
    eprintln!(
        "{what}: first title after {first:?}, the new title {:?} after the change",
        t1.elapsed()
    );
}

#[test]
fn mpv_shows_a_title_change_while_it_plays() {
    if !require("mpv") || !require("ffmpeg") {
        return;
    }
    let dir = TempDir::new("mpv");
    let s = player_server(&dir);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/icy-title.lua");
    let p = Proc::spawn(
        Command::new("mpv")
            .args(["--no-config", "--no-video", "--ao=null", "--no-terminal"])
            .arg(format!("--script={script}"))
            .arg(format!("http://{}/radio.mp3", s.addr)),
    );
    title_change_seen_by(&s, &p, "mpv");
}

#[test]
fn vlc_shows_a_title_change_while_it_plays() {
    if !require("cvlc") || !require("ffmpeg") {
        return;
    }
    let dir = TempDir::new("vlc");
    let s = player_server(&dir);
    let home = TempDir::new("vlc-home");
    let vlc = [
        "cvlc",
        "--verbose",
        "2",
        "--no-video",
        "--aout",
        "dummy",
        "--intf",
        "dummy",
    ];
    let url = format!("http://{}/radio.mp3", s.addr);
    let mut cmd = if common::proc_status("self", "Uid").split_whitespace().nth(1) == Some("0") {
        // VLC refuses to run as root.
        system_user("ringcast-vlc");
        run_chown(home.path(), "ringcast-vlc");
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=ringcast-vlc",
            "--regid=ringcast-vlc",
            "--init-groups",
            "--",
        ]);
        c.arg("env").arg(format!("HOME={}", home.path().display()));
        c.args(vlc);
        c
    } else {
        let mut c = Command::new(vlc[0]);
        c.args(&vlc[1..]).env("HOME", home.path());
        c
    };
    let p = Proc::spawn(cmd.arg(url));
    title_change_seen_by(&s, &p, "VLC");
}

fn run_chown(path: &std::path::Path, user: &str) {
    common::run(Command::new("chown").arg(user).arg(path));
}

#[test]
fn ffmpeg_shows_a_title_change_while_it_plays() {
    if !require("ffmpeg") {
        return;
    }
    let dir = TempDir::new("ffmpeg-player");
    let s = player_server(&dir);
    let p = Proc::spawn(
        Command::new("ffmpeg")
            .args([
                "-hide_banner",
                "-nostdin",
                "-loglevel",
                "verbose",
                "-icy",
                "1",
                "-i",
            ])
            .arg(format!("http://{}/radio.mp3", s.addr))
            .args(["-f", "null", "-"]),
    );
    title_change_seen_by(&s, &p, "FFmpeg");
}

// ---------------------------------------------------------------------------
// CORS and extra headers
// ---------------------------------------------------------------------------

#[test]
fn cors_headers_preflights_and_extra_headers() {
    let toml = format!(
        "{HEAD}{}{}{}",
        raw_stream(
            "/x",
            100,
            200,
            0,
            0,
            "[stream.headers]\nX-Station = \"example\"\nCache-Tag = \"radio\""
        ),
        raw_stream(
            "/c",
            100,
            200,
            0,
            0,
            "cors_origin = \"https://player.example\""
        ),
        raw_stream("/n", 100, 200, 0, 0, "cors_origin = \"\"")
    );
    let s = start(toml, "/x");
    // Default: * with the icy-* headers exposed, and the extra headers.
    let x = Client::request(
        s.addr,
        "GET /x HTTP/1.1\r\nHost: test\r\nOrigin: https://any.example\r\nIcy-MetaData: 1\r\n\r\n",
    );
    assert_eq!(
        x.header("Access-Control-Allow-Origin").as_deref(),
        Some("*"),
        "{}",
        x.head
    );
    let exposed = x
        .header("Access-Control-Expose-Headers")
        .unwrap_or_default();
    for h in ["icy-metaint", "icy-name", "icy-genre", "icy-br"] {
        assert!(exposed.contains(h), "{h} not exposed: {exposed}");
    }
    assert_eq!(x.header("X-Station").as_deref(), Some("example"));
    assert_eq!(x.header("Cache-Tag").as_deref(), Some("radio"));
    let c = s.get_path("/c");
    assert_eq!(
        c.header("Access-Control-Allow-Origin").as_deref(),
        Some("https://player.example"),
        "{}",
        c.head
    );
    assert_eq!(c.header("X-Station"), None, "extra headers are per mount");
    let n = s.get_path("/n");
    assert_eq!(n.header("Access-Control-Allow-Origin"), None, "{}", n.head);

    let preflight = |path: &str| {
        let mut c = Client::request(
            s.addr,
            &format!("OPTIONS {path} HTTP/1.1\r\nHost: test\r\nOrigin: https://app.example\r\nAccess-Control-Request-Method: GET\r\nAccess-Control-Request-Headers: Icy-MetaData\r\n\r\n"),
        );
        let _ = c.read_to_eof(WAIT);
        c
    };
    let p = preflight("/x");
    assert!(p.status_line().contains(" 204 "), "{}", p.head);
    assert_eq!(
        p.header("Access-Control-Allow-Origin").as_deref(),
        Some("*")
    );
    let allowed = p.header("Access-Control-Allow-Headers").unwrap_or_default();
    assert!(
        allowed.to_ascii_lowercase().contains("icy-metadata"),
        "{allowed}"
    );
    assert!(p
        .header("Access-Control-Allow-Methods")
        .unwrap_or_default()
        .contains("GET"));
    assert!(p
        .header("Access-Control-Expose-Headers")
        .unwrap_or_default()
        .contains("icy-metaint"));
    let p = preflight("/c");
    assert_eq!(
        p.header("Access-Control-Allow-Origin").as_deref(),
        Some("https://player.example")
    );
    // No CORS on /n: the preflight is not allowed.
    let p = preflight("/n");
    assert!(p.status_line().contains(" 405 "), "{}", p.head);
    // A mount that does not exist.
    let before = metric(s.addr, "shard_not_found_total");
    let p = preflight("/nope");
    assert!(p.status_line().contains(" 404 "), "{}", p.head);
    assert_eq!(p.header("Access-Control-Allow-Origin"), None, "{}", p.head);
    assert_eq!(metric(s.addr, "shard_not_found_total"), before + 1);
    assert_eq!(metric(s.addr, "shard_preflights_total"), 3);
    // The server still serves.
    let mut x = s.get_path("/x");
    assert_consecutive(
        &frames_of(&x.read_body(2000, WAIT), 100),
        "/x after preflights",
    );
    // Title updates and status-json.xsl answer browsers too.
    let (_, head, _) = get_with(
        s.addr,
        "/status-json.xsl",
        "Origin: https://app.example\r\n",
    );
    assert!(
        head.contains("Access-Control-Allow-Origin: *\r\n"),
        "{head}"
    );
}
