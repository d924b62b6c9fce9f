//! Titles of streams whose source cannot send them in band (a pipe, a file,
//! a command): from a title file (its first line, read again when the file
//! changes) or a title command (each line it prints is the new title). A
//! thread per stream that has one, ending with the stream.

use std::io::{BufRead, BufReader, Read};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::metadata::Title;
use crate::stream::Stream;
use crate::sys;

/// How often a title file is looked at.
const FILE_POLL: Duration = Duration::from_millis(500);

/// Start the title thread of `stream` if its configuration names a title
/// file or command.
pub fn spawn(stream: Arc<Stream>) {
    let cfg = stream.config();
    let job: Option<Box<dyn FnOnce() + Send>> = if let Some(path) = cfg.title_file.clone() {
        let s = stream.clone();
        Some(Box::new(move || watch_file(s, path)))
    } else if let Some(cmd) = cfg.title_command.clone() {
        let s = stream.clone();
        Some(Box::new(move || run_command(s, cmd)))
    } else {
        None
    };
    if let Some(job) = job {
        if let Err(e) = std::thread::Builder::new()
            .name(format!("titles-{}", stream.id))
            .spawn(job)
        {
            log::error!("stream={}: cannot start its title thread: {e}", stream.name);
        }
    }
}

/// The first line of a title file's text (Latin-1 when not UTF-8).
fn first_line(bytes: &[u8]) -> String {
    let line = bytes.split(|&b| b == b'\n').next().unwrap_or(&[]);
    let text = match std::str::from_utf8(line) {
        Ok(t) => t.to_string(),
        Err(_) => crate::metadata::decode_title(line, None),
    };
    text.trim().to_string()
}

fn watch_file(stream: Arc<Stream>, path: PathBuf) {
    let mut seen: Option<(SystemTime, u64)> = None;
    let mut warned = false;
    while !stream.stop_requested() {
        match std::fs::metadata(&path) {
            Ok(m) => {
                let stamp = (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len());
                if seen != Some(stamp) {
                    seen = Some(stamp);
                    let mut bytes = Vec::new();
                    if let Ok(f) = std::fs::File::open(&path) {
                        let _ = f.take(64 * 1024).read_to_end(&mut bytes);
                        stream.set_title(Title::new(&first_line(&bytes), None));
                    }
                }
                warned = false;
            }
            Err(e) if !warned => {
                log::warn!("stream={} title file {}: {e}", stream.name, path.display());
                warned = true;
            }
            Err(_) => {}
        }
        std::thread::sleep(FILE_POLL);
    }
}

fn run_command(stream: Arc<Stream>, words: Vec<String>) {
    let Some((program, args)) = words.split_first() else {
        return;
    };
    let mut backoff = Duration::from_secs(1);
    while !stream.stop_requested() {
        let began = Instant::now();
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        sys::prepare_child(&mut cmd);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                log::warn!("stream={} title command {program}: {e}", stream.name);
                sleep_unless_stopped(&stream, backoff);
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        if let Some(out) = child.stdout.take() {
            let fd = out.as_raw_fd();
            let _ = sys::set_nonblocking(fd);
            let mut reader = BufReader::new(out);
            let mut line = Vec::new();
            'read: while !stream.stop_requested() {
                match sys::wait_readable(&[fd], Some(Duration::from_millis(500))) {
                    Ok(r) if r[0] => {}
                    Ok(_) => continue,
                    Err(_) => break,
                }
                loop {
                    match reader.read_until(b'\n', &mut line) {
                        Ok(0) => break 'read,
                        Ok(_) if line.ends_with(b"\n") => {
                            stream.set_title(Title::new(&first_line(&line), None));
                            line.clear();
                        }
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(_) => break 'read,
                    }
                    if line.len() > 64 * 1024 {
                        line.clear();
                    }
                }
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        if began.elapsed() > Duration::from_secs(30) {
            backoff = Duration::from_secs(1);
        }
        sleep_unless_stopped(&stream, backoff);
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

fn sleep_unless_stopped(stream: &Stream, d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until && !stream.stop_requested() {
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_lines() {
        assert_eq!(first_line(b"Artist - Song\nnext\n"), "Artist - Song");
        assert_eq!(first_line(b"  Caf\xe9  "), "Café");
        assert_eq!(first_line(b""), "");
    }
}
