//! Parsers for the command-line values: durations, behaviour mixes, address ranges, close
//! modes and HTTP versions.

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::clients::{Behaviour, CloseMode, HttpVersion};

/// Parses `10s`, `500ms`, `2m`, `1h`, `250us`, or a bare number of seconds (`1.5`).
pub fn duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let v: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 10s, 500ms, 2m"))?;
    let scale = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        u => return Err(format!("invalid duration unit {u:?} in {s:?}")),
    };
    let secs = v * scale;
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(format!("duration {s:?} out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// One entry of a `--mix`: a behaviour and its share.
#[derive(Clone, Debug, PartialEq)]
pub struct MixEntry {
    /// What the clients of this entry do.
    pub behaviour: Behaviour,
    /// Weight; weights are normalised to sum to 1.
    pub weight: f64,
}

/// Parses `fast=0.6,paced=0.2,paced@8000=0.1,stall=0.1,reconnect=0,churn=0`. `paced` reads at
/// `default_rate`; `paced@R` at R bytes/s. Zero weights are dropped; weights are
/// normalised.
pub fn mix(s: &str, default_rate: u64) -> Result<Vec<MixEntry>, String> {
    let mut out: Vec<MixEntry> = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, w) = part
            .split_once('=')
            .ok_or_else(|| format!("--mix entry {part:?}: expected NAME=FRACTION"))?;
        let weight: f64 = w
            .trim()
            .parse()
            .map_err(|_| format!("--mix entry {part:?}: {w:?} is not a number"))?;
        if !weight.is_finite() || weight < 0.0 {
            return Err(format!("--mix entry {part:?}: fraction must be >= 0"));
        }
        let name = name.trim();
        let behaviour = match name {
            "fast" => Behaviour::Fast,
            "stall" => Behaviour::Stall,
            "reconnect" => Behaviour::Reconnect,
            "churn" => Behaviour::Churn,
            "paced" => {
                if default_rate == 0 {
                    return Err("--mix paced needs --rate BYTES_PER_SEC (or paced@RATE)".into());
                }
                Behaviour::Paced { rate: default_rate }
            }
            _ => match name.strip_prefix("paced@") {
                Some(r) => {
                    let rate: u64 = r
                        .parse()
                        .map_err(|_| format!("--mix entry {part:?}: bad rate {r:?}"))?;
                    if rate == 0 {
                        return Err(format!("--mix entry {part:?}: rate must be > 0"));
                    }
                    Behaviour::Paced { rate }
                }
                None => {
                    return Err(format!(
                        "--mix entry {part:?}: unknown behaviour {name:?} (fast, paced, paced@RATE, stall, reconnect, churn)"
                    ))
                }
            },
        };
        if weight == 0.0 {
            continue;
        }
        match out.iter_mut().find(|e| e.behaviour == behaviour) {
            Some(e) => e.weight += weight,
            None => out.push(MixEntry { behaviour, weight }),
        }
    }
    let total: f64 = out.iter().map(|e| e.weight).sum();
    if out.is_empty() || total <= 0.0 {
        return Err(format!("--mix {s:?}: no behaviour has a positive fraction"));
    }
    for e in &mut out {
        e.weight /= total;
    }
    Ok(out)
}

/// Parses `--close`: `fin`, `rst` or `mix` (every other session each way).
pub fn close_mode(s: &str) -> Result<CloseMode, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "fin" => Ok(CloseMode::Fin),
        "rst" | "reset" => Ok(CloseMode::Rst),
        "mix" => Ok(CloseMode::Mix),
        other => Err(format!("--close {other:?}: expected fin, rst or mix")),
    }
}

/// Parses `--http-version`: `1.0`, `1.1` or `mix` (half each way, in pairs).
pub fn http_version(s: &str) -> Result<HttpVersion, String> {
    match s.trim().to_ascii_lowercase().trim_start_matches("http/") {
        "1.0" => Ok(HttpVersion::Http10),
        "1.1" => Ok(HttpVersion::Http11),
        "mix" => Ok(HttpVersion::Mix),
        other => Err(format!(
            "--http-version {other:?}: expected 1.0, 1.1 or mix"
        )),
    }
}

/// Splits `n` clients over the mix by largest remainder; returns counts in mix order.
pub fn mix_counts(mix: &[MixEntry], n: usize) -> Vec<usize> {
    let exact: Vec<f64> = mix.iter().map(|e| e.weight * n as f64).collect();
    let mut counts: Vec<usize> = exact.iter().map(|x| x.floor() as usize).collect();
    let mut left = n - counts.iter().sum::<usize>().min(n);
    let mut order: Vec<usize> = (0..mix.len()).collect();
    order.sort_by(|&a, &b| {
        let ra = exact[a] - exact[a].floor();
        let rb = exact[b] - exact[b].floor();
        rb.partial_cmp(&ra).unwrap_or(std::cmp::Ordering::Equal)
    });
    for &i in order.iter().cycle().take(mix.len() * 2) {
        if left == 0 {
            break;
        }
        counts[i] += 1;
        left -= 1;
    }
    counts
}

/// Parses `127.0.0.2-127.0.0.250` (or a single address) into an inclusive range.
pub fn ipv4_range(s: &str) -> Result<(Ipv4Addr, Ipv4Addr), String> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let a: Ipv4Addr = a
        .trim()
        .parse()
        .map_err(|_| format!("--src-ip-range {s:?}: {a:?} is not an IPv4 address"))?;
    let b: Ipv4Addr = b
        .trim()
        .parse()
        .map_err(|_| format!("--src-ip-range {s:?}: {b:?} is not an IPv4 address"))?;
    if u32::from(b) < u32::from(a) {
        return Err(format!("--src-ip-range {s:?}: end before start"));
    }
    Ok((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(duration("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(duration("2m").unwrap(), Duration::from_secs(120));
        assert!(duration("x").is_err());
        assert!(duration("5 parsecs").is_err());
    }

    #[test]
    fn mixes() {
        let m = mix("fast=0.6,paced=0.2,stall=0.2,reconnect=0", 16000).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[1].behaviour, Behaviour::Paced { rate: 16000 });
        assert_eq!(mix_counts(&m, 10), vec![6, 2, 2]);
        assert_eq!(mix_counts(&m, 7).iter().sum::<usize>(), 7);
        let m = mix("paced@8000=1,fast=1", 0).unwrap();
        assert_eq!(m[0].behaviour, Behaviour::Paced { rate: 8000 });
        assert!((m[0].weight - 0.5).abs() < 1e-9);
        assert!(mix("paced=1", 0).is_err());
        assert!(mix("walk=1", 0).is_err());
        assert!(mix("fast=0", 0).is_err());
    }

    #[test]
    fn churn_in_mixes() {
        let m = mix("churn=1", 0).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].behaviour, Behaviour::Churn);
        assert_eq!(Behaviour::Churn.label(), "churn");
        let m = mix("paced=3,churn=1", 16000).unwrap();
        assert_eq!(m[1].behaviour, Behaviour::Churn);
        assert!((m[1].weight - 0.25).abs() < 1e-9);
        assert_eq!(mix_counts(&m, 100), vec![75, 25]);
        assert!(mix("churn", 0).is_err());
    }

    #[test]
    fn close_modes() {
        assert_eq!(close_mode("fin").unwrap(), CloseMode::Fin);
        assert_eq!(close_mode("RST").unwrap(), CloseMode::Rst);
        assert_eq!(close_mode("reset").unwrap(), CloseMode::Rst);
        assert_eq!(close_mode(" mix ").unwrap(), CloseMode::Mix);
        assert!(close_mode("linger").is_err());
        assert!(close_mode("").is_err());
    }

    #[test]
    fn http_versions() {
        assert_eq!(http_version("1.0").unwrap(), HttpVersion::Http10);
        assert_eq!(http_version("HTTP/1.1").unwrap(), HttpVersion::Http11);
        assert_eq!(http_version("mix").unwrap(), HttpVersion::Mix);
        assert!(http_version("2").is_err());
        assert!(http_version("1.2").is_err());
    }

    #[test]
    fn ranges() {
        let (a, b) = ipv4_range("127.0.0.2-127.0.0.250").unwrap();
        assert_eq!(u32::from(b) - u32::from(a), 248);
        assert!(ipv4_range("127.0.0.9-127.0.0.2").is_err());
        assert!(ipv4_range("127.0.0.5").is_ok());
    }
}
