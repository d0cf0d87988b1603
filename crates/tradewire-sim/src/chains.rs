//! Order chains: an entry order with a take-profit and/or stop-loss exit (one-cancels-
//! the-other). Exits are reduce-only trigger orders placed when the entry first fills and
//! grown with each further entry fill; when one exit fills the other is canceled, and a
//! partial fill of one shrinks the other. Every step is a `lifecycle` record on the chain.

use rust_decimal::Decimal;
use serde_json::json;

use crate::engine::Engine;
use crate::fills::order_key;
use crate::model::{ChainRole, Effect, LifecycleEntity, Order, OrderStatus, OrderType, Side, TimeInForce};
use crate::orders::OrderState;

fn role_name(role: ChainRole) -> &'static str {
    role.as_str()
}

impl Engine {
    /// A chain order (entry or exit) filled `delta` more.
    pub(crate) fn on_chain_fill(&mut self, row: &Order, delta: Decimal, now_ms: i64, out: &mut Vec<Effect>) {
        let (Some(cid), Some(role)) = (row.chain_id.clone(), row.chain_role) else { return };
        let Some(chain) = self.chains.get(&cid).cloned() else { return };
        let user = chain.user_id.clone();
        match role {
            ChainRole::Entry => {
                let done = row.status == OrderStatus::Filled;
                let event = if done { "entry_filled" } else { "entry_partially_filled" };
                let detail =
                    json!({"order_id": row.id, "filled_quantity": row.filled_quantity, "delta": delta});
                self.record(out, &user, LifecycleEntity::Chain, &cid, event, detail, now_ms);
                if done && let Some(c) = self.chains.get_mut(&cid) {
                    c.entry_open = false;
                }
                let key = order_key(row);
                let has_position =
                    self.positions.get(&key).is_some_and(|p| Side::opening(p.row.side) == row.side);
                if chain.tp_order.is_none() && chain.sl_order.is_none() {
                    if has_position {
                        self.place_exits(&cid, row, now_ms, out);
                    } else {
                        let detail = json!({"reason": "no_position"});
                        self.record(
                            out,
                            &user,
                            LifecycleEntity::Chain,
                            &cid,
                            "exits_skipped",
                            detail,
                            now_ms,
                        );
                    }
                } else {
                    let mut resized = Vec::new();
                    for id in [chain.tp_order.clone(), chain.sl_order.clone()].into_iter().flatten() {
                        let Some(seq) = self.order_index.get(&id).copied() else { continue };
                        let Some(o) = self.orders.get_mut(&seq) else { continue };
                        o.row.quantity += delta;
                        o.row.updated_at = now_ms;
                        out.push(Effect::OrderUpserted(o.row.clone()));
                        resized.push(json!({"order_id": id, "quantity": o.row.quantity}));
                    }
                    if !resized.is_empty() {
                        let detail = json!({"exits": resized});
                        self.record(
                            out,
                            &user,
                            LifecycleEntity::Chain,
                            &cid,
                            "exits_resized",
                            detail,
                            now_ms,
                        );
                    }
                }
                self.complete_chain_if_done(&cid, now_ms, out);
            }
            ChainRole::TakeProfit | ChainRole::StopLoss => {
                let full = row.status == OrderStatus::Filled;
                let event =
                    format!("{}_{}", role_name(role), if full { "filled" } else { "partially_filled" });
                let detail =
                    json!({"order_id": row.id, "filled_quantity": row.filled_quantity, "delta": delta});
                self.record(out, &user, LifecycleEntity::Chain, &cid, &event, detail, now_ms);
                let other = if role == ChainRole::TakeProfit {
                    chain.sl_order.clone()
                } else {
                    chain.tp_order.clone()
                };
                if let Some(seq) = other.and_then(|id| self.order_index.get(&id).copied()) {
                    let shrink_to =
                        self.orders.get(&seq).map(|o| (o.row.quantity - delta).max(o.row.filled_quantity));
                    match shrink_to {
                        Some(q) if !full && q > self.orders[&seq].row.filled_quantity => {
                            let o = self.orders.get_mut(&seq).expect("open order");
                            o.row.quantity = q;
                            o.row.updated_at = now_ms;
                            let r = o.row.clone();
                            out.push(Effect::OrderUpserted(r.clone()));
                            let detail = json!({"order_id": r.id, "quantity": r.quantity});
                            self.record(
                                out,
                                &user,
                                LifecycleEntity::Chain,
                                &cid,
                                "exit_resized",
                                detail,
                                now_ms,
                            );
                        }
                        Some(_) => self.end_order(seq, OrderStatus::Canceled, "oco", now_ms, out),
                        None => {}
                    }
                }
                self.complete_chain_if_done(&cid, now_ms, out);
            }
        }
    }

    /// A chain order ended without filling completely (canceled, expired, rejected).
    pub(crate) fn on_chain_order_ended(
        &mut self,
        row: &Order,
        reason: &str,
        now_ms: i64,
        out: &mut Vec<Effect>,
    ) {
        let (Some(cid), Some(role)) = (row.chain_id.clone(), row.chain_role) else { return };
        let Some(chain) = self.chains.get_mut(&cid) else { return };
        let user = chain.user_id.clone();
        if role == ChainRole::Entry {
            chain.entry_open = false;
            if row.filled_quantity.is_zero() {
                self.chains.remove(&cid);
                let detail = json!({"order_id": row.id, "status": row.status, "reason": reason});
                self.record(out, &user, LifecycleEntity::Chain, &cid, "canceled", detail, now_ms);
                return;
            }
            let detail = json!({"order_id": row.id, "status": row.status, "reason": reason, "filled_quantity": row.filled_quantity});
            self.record(out, &user, LifecycleEntity::Chain, &cid, "entry_ended", detail, now_ms);
        } else {
            let detail = json!({"order_id": row.id, "role": role, "status": row.status, "reason": reason});
            self.record(out, &user, LifecycleEntity::Chain, &cid, "exit_ended", detail, now_ms);
        }
        self.complete_chain_if_done(&cid, now_ms, out);
    }

    fn place_exits(&mut self, cid: &str, entry: &Order, now_ms: i64, out: &mut Vec<Effect>) {
        let Some(chain) = self.chains.get(cid).cloned() else { return };
        let leverage =
            self.order_index.get(&entry.id).and_then(|s| self.orders.get(s)).map(|o| o.leverage).unwrap_or(1);
        let mut ids = Vec::new();
        for (role, trigger, order_type) in [
            (ChainRole::TakeProfit, chain.take_profit, OrderType::TakeProfit),
            (ChainRole::StopLoss, chain.stop_loss, OrderType::Stop),
        ] {
            let Some(trigger) = trigger else { continue };
            let id = self.ids.next("ord");
            let row = Order {
                client_order_id: id.clone(),
                id: id.clone(),
                side: chain.entry_side.opposite(),
                order_type,
                time_in_force: TimeInForce::Gtc,
                price: None,
                stop_price: Some(trigger),
                quantity: entry.filled_quantity,
                filled_quantity: Decimal::ZERO,
                avg_fill_price: None,
                status: OrderStatus::New,
                reduce_only: true,
                post_only: false,
                reject_reason: None,
                chain_id: Some(cid.to_string()),
                chain_role: Some(role),
                created_at: now_ms,
                updated_at: now_ms,
                ..entry.clone()
            };
            out.push(Effect::OrderUpserted(row.clone()));
            let detail =
                json!({"chain_id": cid, "role": role, "stop_price": trigger, "quantity": row.quantity});
            self.record(out, &row.user_id, LifecycleEntity::Order, &id, "accepted", detail, now_ms);
            self.insert_order(OrderState {
                row,
                reserved: Decimal::ZERO,
                leverage,
                filled_notional: Decimal::ZERO,
            });
            if let Some(c) = self.chains.get_mut(cid) {
                match role {
                    ChainRole::TakeProfit => c.tp_order = Some(id.clone()),
                    _ => c.sl_order = Some(id.clone()),
                }
            }
            ids.push(json!({"role": role, "order_id": id, "stop_price": trigger}));
        }
        let detail = json!({"exits": ids, "quantity": entry.filled_quantity});
        self.record(out, &chain.user_id, LifecycleEntity::Chain, cid, "exits_placed", detail, now_ms);
    }

    fn complete_chain_if_done(&mut self, cid: &str, now_ms: i64, out: &mut Vec<Effect>) {
        let Some(chain) = self.chains.get(cid) else { return };
        let exit_open = [&chain.tp_order, &chain.sl_order]
            .into_iter()
            .flatten()
            .any(|id| self.order_index.contains_key(id));
        if chain.entry_open || exit_open {
            return;
        }
        let user = chain.user_id.clone();
        self.chains.remove(cid);
        self.record(out, &user, LifecycleEntity::Chain, cid, "completed", json!({}), now_ms);
    }
}
