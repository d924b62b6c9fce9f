//! Many streams from a configuration file: routing, limits, status pages,
//! `-check-config`, and SIGHUP reloads (issue 4).

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{Client, Ringcast, Server, TempDir, WAIT};

/// A generator command (TOML array) writing `frame_bytes`-byte frames
/// `<letter><zero-padded number>` every `period_ms`, `count` of them (then it
/// stays silent), numbering from 0.
fn generator(letter: char, frame_bytes: usize, period_ms: u64, count: u64) -> String {
    let digits = frame_bytes - 1;
    let script = format!(
        "import sys,time\\nfor i in range({count}):\\n    sys.stdout.buffer.write(b'{letter}' + b'%0{digits}d' % i)\\n    sys.stdout.flush()\\n    time.sleep({})\\ntime.sleep(3600)\\n",
        period_ms as f64 / 1000.0
    );
    format!("[\"python3\", \"-u\", \"-c\", \"{script}\"]")
}

/// A running `ringcast -config FILE` with this configuration.
fn config_server(toml: &str) -> Server {
    Ringcast::new().config_toml(toml).start()
}

/// Read `n` frames of `fb` bytes and return their numbers, checking each
/// frame is whole and carries `letter`.
fn frames(c: &mut Client, letter: u8, fb: usize, n: usize) -> Vec<u64> {
    let body = c.read_body(n * fb, WAIT);
    body.chunks(fb)
        .map(|f| {
            assert_eq!(
                f[0],
                letter,
                "frame {:?} is not from stream {}",
                String::from_utf8_lossy(f),
                letter as char
            );
            std::str::from_utf8(&f[1..])
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .collect()
}

fn consecutive(nums: &[u64]) -> bool {
    nums.windows(2).all(|w| w[1] == w[0] + 1)
}

fn stream_toml(mount: &str, letter: char, extra: &str) -> String {
    format!(
        "[[stream]]\nmount = \"{mount}\"\nexec = {}\nframe_bytes = 8\nsource_buffer = 64\n{extra}\n",
        generator(letter, 8, 20, 1_000_000)
    )
}

const HEAD: &str = "listen = [\"127.0.0.1:0\"]\nflush_interval = \"0s\"\n";

#[test]
fn two_streams_each_deliver_their_own_bytes() {
    let toml = format!(
        "{HEAD}{}{}",
        stream_toml("/a", 'A', ""),
        stream_toml("/b", 'B', "")
    );
    let s = config_server(&toml);
    let mut a = s.get_path("/a");
    let mut b = s.get_path("/b");
    assert!(a.status_line().contains("200"));
    let na = frames(&mut a, b'A', 8, 20);
    let nb = frames(&mut b, b'B', 8, 20);
    assert!(consecutive(&na), "{na:?}");
    assert!(consecutive(&nb), "{nb:?}");
}

#[test]
fn unknown_path_is_404() {
    let s = config_server(&format!("{HEAD}{}", stream_toml("/a", 'A', "")));
    let (line, body) = s.fetch("/nope");
    assert!(line.starts_with("HTTP/1.1 404"), "{line}");
    assert_eq!(body, "no such stream\n");
}

#[test]
fn limits_answer_503_without_leaking_descriptors() {
    let toml = format!(
        "{HEAD}max_clients = 3\n{}{}",
        stream_toml("/a", 'A', "max_clients = 1"),
        stream_toml("/b", 'B', "")
    );
    let s = config_server(&toml);
    let mut first = s.get_path("/a");
    frames(&mut first, b'A', 8, 2);
    // Start /b's source too, so the count below is not disturbed by it.
    let mut b0 = s.get_path("/b");
    frames(&mut b0, b'B', 8, 1);
    let before = s.open_fds();
    for _ in 0..20 {
        let (line, body) = s.fetch("/a");
        assert!(line.starts_with("HTTP/1.1 503"), "{line}");
        assert_eq!(body, "too many listeners\n");
    }
    // Server-wide limit: /a has 1, /b has 1, one more reaches 3, the next
    // is refused.
    let mut b1 = s.get_path("/b");
    frames(&mut b1, b'B', 8, 1);
    let (line, _) = s.fetch("/b");
    assert!(line.starts_with("HTTP/1.1 503"), "{line}");
    drop(b1);
    // The refused connections and the departed clients give back every fd.
    let deadline = Instant::now() + WAIT;
    while s.open_fds() > before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(s.open_fds(), before, "descriptors leaked");
    // And the slots: /a's one client still receives, a new /b client gets in.
    frames(&mut first, b'A', 8, 2);
    let mut b3 = s.get_path("/b");
    assert!(b3.status_line().contains("200"));
    frames(&mut b3, b'B', 8, 1);
}

#[test]
fn check_config_good_and_broken() {
    let (status, out, err) = Ringcast::new()
        .config_toml(format!("{HEAD}{}", stream_toml("/a", 'A', "")))
        .arg("-check-config")
        .run_to_exit(WAIT);
    assert!(status.success(), "{err}");
    assert!(out.contains("configuration OK"));

    let dir = TempDir::new("check-config");
    let bad = dir.write(
        "bad.toml",
        "listen = \"nowhere\"\n\n[[stream]]\nmount = \"radio\"\nexec = [\"x\"]\nframe_bytes = 0\ncolour = 1\n",
    );
    let (status, _out, err) = Ringcast::new()
        .arg("--config")
        .arg(&bad)
        .arg("--check-config")
        .run_to_exit(WAIT);
    assert_eq!(status.code(), Some(1));
    let shown = bad.display().to_string();
    for line in [1, 4, 6, 7] {
        assert!(
            err.contains(&format!("{shown}:{line}:")),
            "line {line} not reported:\n{err}"
        );
    }
    assert!(err.contains("4 problems"), "{err}");
}

#[test]
fn sighup_adds_removes_and_changes_streams_while_others_miss_nothing() {
    let a = stream_toml("/a", 'A', "");
    let d_old = stream_toml("/d", 'D', "");
    let toml = format!("{HEAD}{a}{}{d_old}", stream_toml("/b", 'B', ""));
    let s = config_server(&toml);
    let mut ca = s.get_path("/a");
    let mut cb = s.get_path("/b");
    let mut cd = s.get_path("/d");
    let mut seen_a = frames(&mut ca, b'A', 8, 10);
    frames(&mut cb, b'B', 8, 2);
    frames(&mut cd, b'D', 8, 2);

    // /b removed, /c added, /d changed (another command, same ring size).
    let d_new = format!(
        "[[stream]]\nmount = \"/d\"\nexec = {}\nframe_bytes = 8\nsource_buffer = 64\n",
        generator('E', 8, 20, 1_000_000)
    );
    s.reload(&format!("{HEAD}{a}{}{d_new}", stream_toml("/c", 'C', "")));
    s.wait_log(
        "`reloaded ... 1 added, 1 removed, 1 reconfigured`",
        |l| l.contains("reloaded") && l.contains("1 added, 1 removed, 1 reconfigured"),
        WAIT,
    );

    // /b's client ends cleanly: whole frames, then EOF.
    let rest = cb.read_to_eof(WAIT);
    assert_eq!(
        rest.len() % 8,
        0,
        "a removed stream's client got a partial frame"
    );
    assert!(rest.chunks(8).all(|f| f[0] == b'B'));
    // /c serves.
    let mut cc = s.get_path("/c");
    frames(&mut cc, b'C', 8, 3);
    // /d's client stayed connected and now receives the new command's frames.
    let deadline = Instant::now() + WAIT;
    loop {
        let f = cd.read_body(8, WAIT);
        if f[0] == b'E' {
            break;
        }
        assert_eq!(f[0], b'D');
        assert!(
            Instant::now() < deadline,
            "/d never switched to its new source"
        );
    }
    // /a missed no frame across the reload.
    seen_a.extend(frames(&mut ca, b'A', 8, 40));
    assert!(
        consecutive(&seen_a),
        "/a skipped frames across the reload: {seen_a:?}"
    );
    // A file that does not parse changes nothing.
    s.reload("this is [not toml");
    s.wait_log(
        "`reload failed, nothing changed`",
        |l| l.contains("reload failed, nothing changed"),
        WAIT,
    );
    let more = frames(&mut ca, b'A', 8, 5);
    assert_eq!(more[0], seen_a.last().unwrap() + 1);
    let c = s.get_path("/c");
    assert!(c.status_line().contains("200"), "{}", c.status_line());
}

#[test]
fn status_clients_and_metrics_match_what_clients_received() {
    // /m: 10 frames of 8 bytes per client (client_max_bytes 80).
    // /q: exactly 5 frames, then silence.
    let m = format!(
        "[[stream]]\nmount = \"/m\"\nexec = {}\nframe_bytes = 8\nclient_max_bytes = 80\n",
        generator('M', 8, 10, 1_000_000)
    );
    let q = format!(
        "[[stream]]\nmount = \"/q\"\nexec = {}\nframe_bytes = 8\n",
        generator('Q', 8, 10, 5)
    );
    let s = config_server(&format!("{HEAD}{m}{q}"));
    let mut got = 0;
    for _ in 0..3 {
        let mut c = s.get_path("/m");
        let body = c.read_to_eof(WAIT);
        assert_eq!(body.len(), 80);
        got += body.len();
    }
    // A client of /q that arrives before its first frame gets all 5.
    let mut cq = s.get_path("/q");
    let nq = frames(&mut cq, b'Q', 8, 5);
    assert_eq!(nq, vec![0, 1, 2, 3, 4]);

    // The counters are summed when read; the last client's end may still be
    // on its way: wait for the figures to settle.
    let deadline = Instant::now() + WAIT;
    let st = loop {
        let st = s.status_json();
        let sm = st["streams"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["mount"] == "/m")
            .unwrap()
            .clone();
        if sm["clients_total"] == 3 && sm["clients"] == 0 || Instant::now() > deadline {
            break st;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let streams = st["streams"].as_array().unwrap();
    let sm = streams.iter().find(|x| x["mount"] == "/m").unwrap();
    assert_eq!(sm["bytes_out"], got as u64, "{sm}");
    assert_eq!(sm["frames_out"], 30);
    assert_eq!(sm["clients_total"], 3);
    assert_eq!(sm["max_bytes_reached"], 3);
    assert_eq!(sm["state"], "running");
    let sq = streams.iter().find(|x| x["mount"] == "/q").unwrap();
    assert_eq!(sq["clients"], 1);
    assert_eq!(sq["frames_in"], 5);
    assert_eq!(sq["bytes_out"], 40);
    assert!(st["process"]["rss_bytes"].as_u64().unwrap() > 0);
    assert!(st["process"]["open_fds"].as_u64().unwrap() > 0);

    // /status/clients lists the /q listener with what it received.
    let (line, body) = s.fetch("/status/clients?stream=%2Fq");
    assert!(line.contains("200"), "{line}");
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    let clients = list["clients"].as_array().unwrap();
    assert_eq!(clients.len(), 1, "{list}");
    let me = &clients[0];
    assert_eq!(me["remote"], cq.local_addr().to_string());
    assert_eq!(me["bytes_sent"], 40);
    assert_eq!(me["frames_sent"], 5);
    assert_eq!(me["frames_skipped"], 0);
    assert_eq!(me["lag_frames"], 0);
    assert_eq!(me["stream"], "/q");
    let (line, _) = s.fetch("/status/clients?stream=/nope");
    assert!(line.contains("404"), "{line}");

    // /metrics says the same in Prometheus text.
    let (line, metrics) = s.fetch("/metrics");
    assert!(line.contains("200"));
    assert!(
        metrics.contains("ringcast_stream_frames_out_total{stream=\"/m\"} 30"),
        "{metrics}"
    );
    assert!(metrics.contains(&format!(
        "ringcast_stream_bytes_out_total{{stream=\"/m\"}} {got}"
    )));
    assert!(metrics.contains("ringcast_stream_clients{stream=\"/q\"} 1"));
    assert!(metrics.contains("# TYPE ringcast_stream_clients gauge"));
}

#[test]
fn html_status_page_is_served() {
    let s = config_server(&format!(
        "{HEAD}{}",
        stream_toml("/a.wav", 'A', "content_type = \"audio/wav\"")
    ));
    for path in ["/", "/status.html"] {
        let mut c = s.get_path(path);
        assert!(
            c.status_line().contains("200"),
            "{path}: {}",
            c.status_line()
        );
        assert!(c.header("content-type").unwrap().starts_with("text/html"));
        let body = String::from_utf8(c.read_to_eof(WAIT)).unwrap();
        assert!(body.contains("<title>ringcast</title>"));
        assert!(body.contains("fetch(\"/status\""), "the page reads /status");
        assert!(
            body.contains("createElement(\"audio\")"),
            "the page has players"
        );
        assert!(
            !body.contains("http://") && !body.contains("https://"),
            "no external assets"
        );
    }
}

#[test]
fn admin_address_moves_status_pages_off_the_public_port() {
    let toml = format!(
        "listen = [\"127.0.0.1:0\"]\nadmin_listen = \"127.0.0.1:0\"\n{}",
        stream_toml("/a", 'A', "")
    );
    let s = config_server(&toml);
    let line = s.wait_log(
        "`Status pages at http://...`",
        |l| l.contains("Status pages at http://"),
        WAIT,
    );
    let admin: SocketAddr = line
        .rsplit("http://")
        .next()
        .unwrap()
        .trim_end_matches("/status")
        .parse()
        .unwrap();
    let (public_status, _) = s.fetch("/status");
    assert!(public_status.contains("404"), "{public_status}");
    let mut c = Client::request(admin, "GET /status HTTP/1.1\r\n\r\n");
    assert!(c.status_line().contains("200"));
    let body = c.read_to_eof(WAIT);
    assert!(serde_json::from_slice::<serde_json::Value>(&body).is_ok());
    let c = Client::request(admin, "GET /a HTTP/1.1\r\n\r\n");
    assert!(
        c.status_line().contains("404"),
        "streams are not served on the admin address"
    );
}
