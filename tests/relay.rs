//! Relays, mirrors and push destinations (issue 13) against real peers.

mod common;

use common::icecast::Icecast;
use common::*;

#[test]
fn icecast_starts_and_answers() {
    if !require("icecast2") {
        return;
    }
    let ice = Icecast::new().start();
    assert!(ice.sources().is_empty());
    let (code, _) = ice.get("/admin/stats");
    assert_eq!(code, 401);
}

#[test]
fn icecast_takes_ffmpeg_and_a_title() {
    if !require_all(&["icecast2", "ffmpeg"]) {
        return;
    }
    let ice = Icecast::new().start();
    let _ff = ice.feed_mp3("/live.mp3");
    ice.wait_mount("/live.mp3", WAIT);
    ice.set_title("/live.mp3", "A & B - Song");
    assert!(wait_until(WAIT, || ice
        .source_field("/live.mp3", "title")
        .as_deref()
        == Some("A & B - Song")));
    let mut c = ice.listen("/live.mp3");
    assert!(c.status_line().contains("200"), "{}", c.head);
    let body = c.read_body(4096, WAIT);
    assert_eq!(body.len(), 4096);
}
