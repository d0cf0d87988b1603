//! Golden fixtures: every frame of the protocol, byte for byte. The JavaScript client's tests
//! read the same files, so a change here is a change of the wire format.

use std::fs;
use std::path::{Path, PathBuf};

use tradewire_protocol::{
    ClientFrame, EventFrame, EventParts, ServerFrame, encode_event_body, insert_subscription_id,
};

fn fixtures(kind: &str) -> Vec<(PathBuf, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(kind);
    let mut out: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let text = fs::read_to_string(&p).unwrap().trim_end().to_owned();
            (p, text)
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no fixtures in {}", dir.display());
    out
}

#[test]
fn client_frames_round_trip_byte_for_byte() {
    for (path, text) in fixtures("client") {
        let frame: ClientFrame =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(serde_json::to_string(&frame).unwrap(), text, "{}", path.display());
    }
}

#[test]
fn server_frames_round_trip_byte_for_byte() {
    for (path, text) in fixtures("server") {
        let frame: ServerFrame =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(frame.to_json(), text, "{}", path.display());
    }
}

#[test]
fn shared_event_encoding_matches_the_fixtures() {
    for name in ["event", "event_insert_no_id", "event_delete"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("fixtures/server/{name}.json"));
        let text = fs::read_to_string(&path).unwrap().trim_end().to_owned();
        let ServerFrame::Event(ev) = serde_json::from_str(&text).unwrap() else {
            panic!("{name} is not an event");
        };
        let EventFrame { id, seq, epoch, topic, change, events, commit_ts, row, old, error } = &ev;
        let events: Vec<&str> = events.iter().map(String::as_str).collect();
        let body = encode_event_body(&EventParts {
            seq: *seq,
            epoch,
            topic,
            change: *change,
            events: &events,
            commit_ts: *commit_ts,
            row: row.as_ref(),
            old: old.as_ref(),
            error: error.as_deref(),
        });
        let framed = match id {
            Some(id) => insert_subscription_id(&body, id),
            None => body,
        };
        assert_eq!(String::from_utf8(framed).unwrap(), text, "{name}");
    }
}

#[test]
fn from_accepts_the_text_form_of_a_position() {
    let f: ClientFrame =
        serde_json::from_str(r#"{"op":"subscribe","id":"a","topics":["*"],"from":"e1:7"}"#).unwrap();
    let ClientFrame::Subscribe { from: Some(tradewire_protocol::From::Position(p)), .. } = f else {
        panic!("expected a position");
    };
    assert_eq!(p.to_string(), "e1:7");
}

#[test]
fn unknown_fields_and_ops_are_rejected() {
    assert!(serde_json::from_str::<ClientFrame>(r#"{"op":"fly"}"#).is_err());
    assert!(serde_json::from_str::<ClientFrame>(r#"{"op":"ping","extra":1}"#).is_err());
    assert!(serde_json::from_str::<ClientFrame>(r#"{"op":"subscribe","id":"a"}"#).is_err());
}
