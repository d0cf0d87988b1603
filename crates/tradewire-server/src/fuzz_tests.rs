//! Property-based fuzzing of every parser that reads outside input: client frames, topic
//! names, `where` filters, REST bodies and numbers, and the pgoutput decoder. Each property
//! says, at least, that no input panics; most also check what a valid input must give.
//!
//! The suite runs a short pass (proptest's default 256 cases each). A dedicated run sets
//! the count: `PROPTEST_CASES=100000 cargo test --release -p tradewire-server --lib fuzz_`.

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use tradewire_hub::Filter;
use tradewire_protocol::{MarketTopic, Topic};

use crate::capture::pg_logical::pgoutput::{self, Datum, Relation};

/// Any JSON value, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        ".{0,24}".prop_map(Value::String),
        "[0-9]{1,30}(\\.[0-9]{0,20})?".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A JSON object with the fields a client frame has, filled with anything.
fn frame_like() -> impl Strategy<Value = String> {
    let op = prop_oneof![
        Just("subscribe".to_owned()),
        Just("unsubscribe".to_owned()),
        Just("auth".to_owned()),
        Just("ping".to_owned()),
        "[a-z]{0,10}",
    ];
    (
        op,
        prop::collection::btree_map(
            prop_oneof![Just("id"), Just("topics"), Just("where"), Just("from"), Just("token"), Just("ts")],
            json_value(),
            0..6,
        ),
    )
        .prop_map(|(op, fields)| {
            let mut m: Map<String, Value> = fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            m.insert("op".into(), Value::String(op));
            Value::Object(m).to_string()
        })
}

proptest! {
    #[test]
    fn fuzz_client_frames_never_panic(text in prop_oneof![".{0,200}", frame_like()]) {
        let _ = crate::gateway::ws::parse_frame(&text);
    }

    #[test]
    fn fuzz_topic_strings_parse_to_what_they_print(text in prop_oneof![
        ".{0,60}",
        "(ticker|trades|book|mark|kline|orders|\\*|[a-z]{1,6})(:[A-Za-z0-9_.-]{0,12}){0,3}",
    ]) {
        if let Ok(topic) = text.parse::<Topic>() {
            match &topic {
                Topic::Market(m) => {
                    let printed = m.to_string();
                    prop_assert_eq!(&printed, &text);
                    prop_assert_eq!(printed.parse::<Topic>().ok(), Some(Topic::Market(m.clone())));
                    if let MarketTopic::Kline(symbol, _) = m {
                        prop_assert!(!symbol.is_empty());
                    }
                }
                Topic::Private(name) => prop_assert_eq!(name, &text),
                Topic::AllPrivate => prop_assert_eq!(text.as_str(), "*"),
            }
        }
    }

    #[test]
    fn fuzz_filters_never_panic_and_match_rows_that_satisfy_them(
        clauses in prop::collection::btree_map("[a-z_]{1,6}", json_value(), 0..20),
        row in prop::collection::btree_map("[a-z_]{1,6}", json_value(), 0..10),
    ) {
        let clauses: Map<String, Value> = clauses.into_iter().collect();
        let row: Map<String, Value> = row.into_iter().collect();
        if let Ok(filter) = Filter::parse(&clauses) {
            let _ = filter.matches(&row);
            // A row holding the first allowed value of every clause matches.
            let mut satisfying = Map::new();
            for (col, want) in &clauses {
                let first = match want {
                    Value::Object(o) => o.get("in").and_then(Value::as_array).and_then(|a| a.first()).cloned(),
                    v => Some(v.clone()),
                };
                if let Some(v) = first {
                    satisfying.insert(col.clone(), v);
                }
            }
            prop_assert!(filter.matches(&satisfying), "{clauses:?} / {satisfying:?}");
        }
    }

    #[test]
    fn fuzz_rest_bodies_never_panic(body in prop_oneof![
        json_value().prop_map(|v| v.to_string()),
        ".{0,120}",
        (json_value(), json_value(), "[0-9e.+-]{0,40}").prop_map(|(a, b, q)| json!({
            "symbol": a, "side": "buy", "type": "limit", "price": b, "quantity": q,
        }).to_string()),
    ]) {
        let _ = serde_json::from_str::<crate::api::trading::NewOrder>(&body);
        let _ = serde_json::from_str::<crate::api::bots::NewBot>(&body);
        let _ = serde_json::from_str::<crate::api::bots::BotPatch>(&body);
    }

    #[test]
    fn fuzz_order_numbers_are_bounded_or_refused(text in prop_oneof![
        ".{0,40}",
        "-?[0-9]{0,40}(\\.[0-9]{0,40})?",
        "[0-9]{1,3}e[+-]?[0-9]{1,3}",
    ]) {
        for field in ["quantity", "price"] {
            if let Ok(v) = crate::api::trading::positive(field, &text) {
                let d: rust_decimal::Decimal = v.parse().expect("an accepted number prints as a decimal");
                prop_assert!(d > rust_decimal::Decimal::ZERO);
                prop_assert!(d <= rust_decimal::Decimal::from(1_000_000_000u64));
                prop_assert!(d.scale() <= 12);
            }
        }
    }

    #[test]
    fn fuzz_pgoutput_decoder_never_panics(
        tag in prop_oneof![Just(b'R'), Just(b'I'), Just(b'U'), Just(b'D'), Just(b'T'), Just(b'B'), Just(b'C'), any::<u8>()],
        rest in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut data = vec![tag];
        data.extend(rest);
        let _ = pgoutput::decode(&data);
    }

    #[test]
    fn fuzz_pgoutput_rows_never_panic(
        columns in prop::collection::vec(("[a-z_]{1,8}", prop_oneof![Just(16u32), Just(20), Just(21), Just(23), Just(25), Just(114), Just(700), Just(701), Just(1700), Just(3802), any::<u32>()]), 0..8),
        values in prop::collection::vec(prop_oneof![
            Just(Datum::Null),
            Just(Datum::Unchanged),
            ".{0,20}".prop_map(Datum::Text),
            "(-?[0-9]{1,25}(\\.[0-9]{1,10})?|NaN|-?Infinity|t|f)".prop_map(Datum::Text),
        ], 0..10),
    ) {
        let rel = Relation { id: 1, namespace: "public".into(), name: "t".into(), columns };
        let row = pgoutput::json_row(&rel, &values, None);
        prop_assert!(serde_json::to_string(&row).is_ok(), "every row is valid JSON");
    }
}
