//! Every figure `/status` shows is also a Prometheus series in `/metrics`
//! (issue 10: counters are declared once and both documents are made from
//! the declarations).

mod common;

use common::*;

/// The metric a `/status` figure must have: `ringcast_{scope}_{key}`, with a
/// counter's `_total` and the units spelled out (`_s` → `_seconds`, `_ms` →
/// `_milliseconds`, `_us` → `_microseconds`); the process figures keep Prometheus' standard names.
fn metric_names(scope: &str, key: &str) -> Vec<String> {
    if scope == "process" && key == "rss_bytes" {
        return vec!["ringcast_process_resident_memory_bytes".into()];
    }
    let key = if let Some(k) = key.strip_suffix("_us") {
        format!("{k}_microseconds")
    } else if let Some(k) = key.strip_suffix("_ms") {
        format!("{k}_milliseconds")
    } else if let Some(k) = key.strip_suffix("_s") {
        format!("{k}_seconds")
    } else {
        key.to_string()
    };
    vec![
        format!("ringcast_{scope}_{key}"),
        format!("ringcast_{scope}_{key}_total"),
    ]
}

/// The value of `name` with `labels` in the metrics text.
fn sample(metrics: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = format!("{name}{labels} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

fn check(
    metrics: &str,
    scope: &str,
    labels: &str,
    obj: &serde_json::Map<String, serde_json::Value>,
    skip: &[&str],
    checked: &mut usize,
) {
    for (key, v) in obj {
        if !v.is_number() || skip.contains(&key.as_str()) {
            continue;
        }
        let names = metric_names(scope, key);
        let found = names.iter().find_map(|n| sample(metrics, n, labels));
        let Some(value) = found else {
            panic!("/status {scope} figure {key:?} has no metric (looked for {names:?}{labels})\n{metrics}");
        };
        // Figures that cannot move between the two requests must agree.
        if matches!(
            key.as_str(),
            "ring_slots" | "ring_bytes" | "client_limit" | "frames_in"
        ) {
            assert_eq!(Some(value), v.as_f64(), "{scope} {key}");
        }
        *checked += 1;
    }
}

#[test]
fn every_figure_in_status_has_its_metric() {
    let server = Ringcast::new()
        .args(["-frame-bytes", "100"])
        .source_exec(raw_gen_args(100, 50, 20, None, 0))
        .start();
    // A listener that reads the 20 frames, so the figures are not all zero.
    let mut c = server.get();
    assert_eq!(c.read_body(2000, WAIT).len(), 2000);

    let fetch = |path: &str| {
        let mut c = server.request(&format!("GET {path} HTTP/1.0\r\n\r\n"));
        assert!(c.status_line().contains("200"), "{path}: {}", c.head);
        String::from_utf8(c.read_to_eof(WAIT)).unwrap()
    };
    let status: serde_json::Value = serde_json::from_str(&fetch("/status")).unwrap();
    let metrics = fetch("/metrics");
    let mut checked = 0;
    let top = status.as_object().unwrap();
    check(&metrics, "server", "", top, &[], &mut checked);
    check(
        &metrics,
        "process",
        "",
        status["process"].as_object().unwrap(),
        &[],
        &mut checked,
    );
    for shard in status["shards"].as_array().unwrap() {
        let labels = format!("{{shard=\"{}\"}}", shard["shard"]);
        check(
            &metrics,
            "shard",
            &labels,
            shard.as_object().unwrap(),
            &["shard"],
            &mut checked,
        );
    }
    for stream in status["streams"].as_array().unwrap() {
        check(
            &metrics,
            "stream",
            "{stream=\"/\"}",
            stream.as_object().unwrap(),
            &[],
            &mut checked,
        );
    }
    assert!(checked > 40, "only {checked} figures checked");
    // And every family has its help and type.
    for line in metrics.lines().filter(|l| l.starts_with("ringcast_")) {
        let name = line.split(['{', ' ']).next().unwrap();
        assert!(
            metrics.contains(&format!("# TYPE {name} ")),
            "{name} has no TYPE"
        );
        assert!(
            metrics.contains(&format!("# HELP {name} ")),
            "{name} has no HELP"
        );
    }
}
