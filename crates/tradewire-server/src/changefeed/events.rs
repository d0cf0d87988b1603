//! Domain events: what a row change means, as a pure function of (topic, old, new).
//!
//! The names are the canonical ones of PROTOCOL.md; the first event is the main one (it
//! becomes the SSE `event:` name). Operator-configured topics have none.

use rust_decimal::Decimal;
use serde_json::Value;
use tradewire_protocol::Row;

fn text<'a>(row: Option<&'a Row>, col: &str) -> Option<&'a str> {
    row?.get(col)?.as_str()
}

fn decimal(row: Option<&Row>, col: &str) -> Option<Decimal> {
    match row?.get(col)? {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.to_string().parse().ok(),
        _ => None,
    }
}

/// Did `col` change between `old` and `new`? Decimals compare by value ("1.0" == "1.00").
fn changed(old: Option<&Row>, new: Option<&Row>, col: &str) -> bool {
    match (decimal(old, col), decimal(new, col)) {
        (Some(a), Some(b)) => a != b,
        _ => old.and_then(|r| r.get(col)) != new.and_then(|r| r.get(col)),
    }
}

/// The domain events of one change. `old` is `None` on insert, `new` is `None` on delete.
pub fn domain_events(topic: &str, old: Option<&Row>, new: Option<&Row>) -> Vec<&'static str> {
    let mut out = Vec::new();
    match topic {
        "orders" => orders(old, new, &mut out),
        "fills" if old.is_none() && new.is_some() => out.push("fill.executed"),
        "positions" => positions(old, new, &mut out),
        "portfolios" => portfolios(old, new, &mut out),
        "bots" => bots(old, new, &mut out),
        "lifecycle" if old.is_none() && new.is_some() => out.push("lifecycle.recorded"),
        "signals" if old.is_none() && new.is_some() => out.push("signal.generated"),
        "risk" => {
            if changed(old, new, "circuit_breaker") || (old.is_none() && new.is_some()) {
                out.push("risk.circuit_breaker_changed");
            } else if old.is_some() && new.is_some() {
                out.push("risk.updated");
            }
        }
        "pnl" if old.is_none() && new.is_some() => out.push("pnl.updated"),
        _ => {}
    }
    out
}

fn order_status_event(status: &str) -> Option<&'static str> {
    Some(match status {
        "new" => "order.accepted",
        "partially_filled" => "order.partially_filled",
        "filled" => "order.filled",
        "canceled" => "order.canceled",
        "rejected" => "order.rejected",
        "expired" => "order.expired",
        "triggered" => "order.triggered",
        _ => return None,
    })
}

fn orders(old: Option<&Row>, new: Option<&Row>, out: &mut Vec<&'static str>) {
    let status = text(new, "status");
    match (old, new) {
        (None, Some(_)) => {
            // An order inserted as rejected was never accepted.
            if status == Some("rejected") {
                out.push("order.rejected");
            } else {
                out.push("order.accepted");
                if let Some(e) = status.filter(|s| *s != "new").and_then(order_status_event) {
                    out.push(e);
                }
            }
        }
        (Some(_), Some(_)) => {
            if changed(old, new, "status") {
                out.extend(status.and_then(order_status_event));
            } else if status == Some("partially_filled") && changed(old, new, "filled_quantity") {
                out.push("order.partially_filled");
            }
        }
        _ => {}
    }
    let in_chain = text(new, "chain_id").or(text(old, "chain_id")).is_some();
    if in_chain && (old.is_none() || new.is_none() || !out.is_empty() || changed(old, new, "quantity")) {
        out.push("chain.updated");
    }
}

fn positions(old: Option<&Row>, new: Option<&Row>, out: &mut Vec<&'static str>) {
    match (old, new) {
        (None, Some(_)) => out.push(match text(new, "status") {
            Some("closed") => "position.closed",
            Some("liquidated") => "position.liquidated",
            _ => "position.opened",
        }),
        (Some(_), Some(_)) => {
            if changed(old, new, "status") {
                match text(new, "status") {
                    Some("closed") => out.push("position.closed"),
                    Some("liquidated") => out.push("position.liquidated"),
                    Some("open") => out.push("position.opened"),
                    _ => {}
                }
            } else if text(new, "status") == Some("open") {
                out.push("position.changed");
            }
        }
        _ => {}
    }
}

fn portfolios(old: Option<&Row>, new: Option<&Row>, out: &mut Vec<&'static str>) {
    let (Some(_), Some(_)) = (old, new) else {
        if new.is_some() {
            out.push("account.updated");
        }
        return;
    };
    let margin = match (decimal(old, "margin_used"), decimal(new, "margin_used")) {
        (Some(a), Some(b)) if b > a => Some("margin.reserved"),
        (Some(a), Some(b)) if b < a => Some("margin.released"),
        _ => None,
    };
    let account =
        ["balance", "equity", "unrealized_pnl", "realized_pnl"].iter().any(|c| changed(old, new, c));
    out.extend(margin);
    if account || margin.is_none() && changed(old, new, "margin_available") {
        out.push("account.updated");
    }
}

fn bots(old: Option<&Row>, new: Option<&Row>, out: &mut Vec<&'static str>) {
    match (old, new) {
        (None, Some(_)) => out.push("bot.created"),
        (Some(_), None) => out.push("bot.deleted"),
        (Some(_), Some(_)) => {
            if changed(old, new, "status") {
                out.push("bot.status_changed");
            }
            let config =
                ["name", "strategy", "symbol", "config", "portfolio_id"].iter().any(|c| changed(old, new, c));
            if config {
                out.push("bot.config_changed");
            }
        }
        (None, None) => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn row(v: Value) -> Row {
        v.as_object().unwrap().clone()
    }

    fn ev(topic: &str, old: Option<Value>, new: Option<Value>) -> Vec<&'static str> {
        domain_events(topic, old.map(row).as_ref(), new.map(row).as_ref())
    }

    #[test]
    fn orders_follow_their_status() {
        let o = |status: &str, filled: &str| json!({"status": status, "filled_quantity": filled, "quantity": "1"});
        assert_eq!(ev("orders", None, Some(o("new", "0"))), ["order.accepted"]);
        assert_eq!(ev("orders", None, Some(o("rejected", "0"))), ["order.rejected"]);
        assert_eq!(ev("orders", None, Some(o("filled", "1"))), ["order.accepted", "order.filled"]);
        for (status, name) in [
            ("partially_filled", "order.partially_filled"),
            ("filled", "order.filled"),
            ("canceled", "order.canceled"),
            ("rejected", "order.rejected"),
            ("expired", "order.expired"),
            ("triggered", "order.triggered"),
        ] {
            assert_eq!(ev("orders", Some(o("new", "0")), Some(o(status, "0.5"))), [name]);
        }
        assert_eq!(
            ev("orders", Some(o("partially_filled", "0.2")), Some(o("partially_filled", "0.5"))),
            ["order.partially_filled"]
        );
        assert!(ev("orders", Some(o("new", "0")), Some(o("new", "0.0"))).is_empty());
        assert!(ev("orders", Some(o("new", "0")), None).is_empty());
    }

    #[test]
    fn chained_orders_also_update_their_chain() {
        let o = |status: &str| json!({"status": status, "chain_id": "ch1", "quantity": "1"});
        assert_eq!(ev("orders", None, Some(o("new"))), ["order.accepted", "chain.updated"]);
        assert_eq!(ev("orders", Some(o("new")), Some(o("canceled"))), ["order.canceled", "chain.updated"]);
        let shrunk = json!({"status": "new", "chain_id": "ch1", "quantity": "0.5"});
        assert_eq!(ev("orders", Some(o("new")), Some(shrunk)), ["chain.updated"]);
    }

    #[test]
    fn fills_lifecycle_signals_and_pnl_are_inserts() {
        assert_eq!(ev("fills", None, Some(json!({}))), ["fill.executed"]);
        assert_eq!(ev("lifecycle", None, Some(json!({}))), ["lifecycle.recorded"]);
        assert_eq!(ev("signals", None, Some(json!({}))), ["signal.generated"]);
        assert_eq!(ev("pnl", None, Some(json!({}))), ["pnl.updated"]);
        assert!(ev("fills", Some(json!({})), Some(json!({}))).is_empty());
    }

    #[test]
    fn positions_open_change_close_and_liquidate() {
        let p = |status: &str, qty: &str| json!({"status": status, "quantity": qty});
        assert_eq!(ev("positions", None, Some(p("open", "1"))), ["position.opened"]);
        assert_eq!(ev("positions", Some(p("open", "1")), Some(p("open", "2"))), ["position.changed"]);
        assert_eq!(ev("positions", Some(p("open", "1")), Some(p("closed", "0"))), ["position.closed"]);
        assert_eq!(
            ev("positions", Some(p("open", "1")), Some(p("liquidated", "0"))),
            ["position.liquidated"]
        );
    }

    #[test]
    fn portfolios_report_margin_and_account() {
        let pf = |bal: &str, margin: &str| json!({"balance": bal, "equity": bal, "margin_used": margin});
        assert_eq!(ev("portfolios", Some(pf("100", "0")), Some(pf("100", "10"))), ["margin.reserved"]);
        assert_eq!(ev("portfolios", Some(pf("100", "10")), Some(pf("100", "0"))), ["margin.released"]);
        assert_eq!(ev("portfolios", Some(pf("100", "0")), Some(pf("90", "0"))), ["account.updated"]);
        assert_eq!(
            ev("portfolios", Some(pf("100", "0")), Some(pf("90", "5"))),
            ["margin.reserved", "account.updated"]
        );
        assert!(ev("portfolios", Some(pf("100.0", "0")), Some(pf("100.00", "0"))).is_empty());
    }

    #[test]
    fn bots_report_status_and_config() {
        let b = |status: &str, name: &str| json!({"status": status, "name": name});
        assert_eq!(ev("bots", None, Some(b("stopped", "a"))), ["bot.created"]);
        assert_eq!(ev("bots", Some(b("running", "a")), Some(b("paused", "a"))), ["bot.status_changed"]);
        assert_eq!(ev("bots", Some(b("running", "a")), Some(b("running", "b"))), ["bot.config_changed"]);
        assert_eq!(ev("bots", Some(b("running", "a")), None), ["bot.deleted"]);
    }

    #[test]
    fn risk_reports_the_circuit_breaker() {
        let r = |cb: &str, pnl: &str| json!({"circuit_breaker": cb, "daily_pnl": pnl});
        assert_eq!(
            ev("risk", Some(r("armed", "0")), Some(r("tripped", "-5"))),
            ["risk.circuit_breaker_changed"]
        );
        assert_eq!(ev("risk", Some(r("armed", "0")), Some(r("armed", "-5"))), ["risk.updated"]);
        assert_eq!(ev("risk", None, Some(r("armed", "0"))), ["risk.circuit_breaker_changed"]);
    }

    #[test]
    fn operator_topics_have_no_domain_events() {
        assert!(ev("my_table", None, Some(json!({"x": 1}))).is_empty());
    }
}
