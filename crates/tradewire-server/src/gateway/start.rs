//! How a subscription starts: from a snapshot, from a position (replay), or from now,
//! without a gap or a duplicate against the live stream.
//!
//! Each start reads the database while it keeps the session's live queue moving: a change
//! taken off the queue meanwhile is served to the session's other subscriptions at once
//! (so a burst does not overflow a starting session) and kept; once the read is done, the
//! kept changes past it are handed to the new subscription in order. When more were taken
//! off than could be kept, the log is read again instead. Every read can be abandoned when
//! the stream ends (shutdown, a slow consumer, the peer gone).

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;

use tradewire_hub::{Change, Subscription};
use tradewire_protocol::{ChangeOp, Position, ServerFrame};

use super::selection::Selection;
use super::session::{Outgoing, Session, Transport, resync_frame};
use crate::changefeed::Resync;
use crate::errors::StreamEnd;

/// Replay reads the log in batches of this many changes; at most this many changes taken
/// off the queue during a start are kept for the new subscription.
const REPLAY_BATCH: usize = 1000;

impl Session {
    /// Start at the head of the user's stream now.
    pub(super) async fn start_now<T: Transport>(
        &mut self,
        sub: &mut Subscription,
        selection: &Selection,
        out: &mut T,
    ) -> Result<bool, StreamEnd> {
        let mut taken = TakenOff::new();
        let log = self.gateway.app().log().clone();
        let user = self.user().to_string();
        sub.after = self.read_while_live(async move { log.head(&user).await }, &mut taken, out).await?;
        out.send(Outgoing::Frame(subscribed(&sub.id, selection))).await?;
        self.catch_up(sub, &mut taken, out).await
    }

    /// Start with the current rows and the position they correspond to.
    pub(super) async fn start_snapshot<T: Transport>(
        &mut self,
        sub: &mut Subscription,
        selection: &Selection,
        out: &mut T,
    ) -> Result<bool, StreamEnd> {
        let mut taken = TakenOff::new();
        let log = self.gateway.app().log().clone();
        let (user, names, filter) =
            (self.user().to_string(), selection.names.clone(), selection.filter.clone());
        let limit = self.gateway.settings().snapshot_max_rows;
        let snap = self
            .read_while_live(async move { log.snapshot(&user, names, filter, limit).await }, &mut taken, out)
            .await?;
        sub.after = snap.head;
        out.send(Outgoing::Frame(subscribed(&sub.id, selection))).await?;
        out.send(Outgoing::Frame(ServerFrame::Snapshot {
            id: sub.id.to_string(),
            position: Position::new(self.gateway.app().log().epoch().to_string(), snap.head),
            rows: snap.rows,
            truncated: snap.truncated,
        }))
        .await?;
        self.catch_up(sub, &mut taken, out).await
    }

    /// Start after `from`: replay the log from there, then go live. `Ok(false)`:
    /// `resync_required` was sent instead (the position cannot be served).
    pub(super) async fn start_replay<T: Transport>(
        &mut self,
        sub: &mut Subscription,
        selection: &Selection,
        from: Position,
        out: &mut T,
    ) -> Result<bool, StreamEnd> {
        let mut taken = TakenOff::new();
        let (log, user, after) = (self.gateway.app().log().clone(), self.user().to_string(), from.seq);
        let check = async move { log.check_from(&user, &from).await };
        if let Err(reason) = self.read_while_live(check, &mut taken, out).await? {
            out.send(resync(&sub.id, reason)).await?;
            return Ok(false);
        }
        out.send(Outgoing::Frame(subscribed(&sub.id, selection))).await?;
        sub.after = after;
        self.replay(sub, &mut taken, out).await
    }

    /// After a start's read: hand over what was taken off meanwhile, or replay the log when
    /// too much was taken off to keep.
    async fn catch_up<T: Transport>(
        &mut self,
        sub: &mut Subscription,
        taken: &mut TakenOff,
        out: &mut T,
    ) -> Result<bool, StreamEnd> {
        if !hand_over(sub, taken, out).await? {
            return Ok(false);
        }
        if sub.after >= taken.newest {
            return Ok(true);
        }
        taken.reset();
        self.replay(sub, taken, out).await
    }

    /// Read the log after `sub.after` in batches until it is read to its end, then hand
    /// over what was taken off meanwhile. `Ok(false)`: history was pruned meanwhile and
    /// `resync_required` was sent (never a silent skip).
    async fn replay<T: Transport>(
        &mut self,
        sub: &mut Subscription,
        taken: &mut TakenOff,
        out: &mut T,
    ) -> Result<bool, StreamEnd> {
        let log = self.gateway.app().log().clone();
        loop {
            // Taken off before this read began, so committed before it: the read returns
            // them unless they have expired.
            let owed = taken.newest;
            let (log, user, after) = (log.clone(), self.user().to_string(), sub.after);
            let batch = self
                .read_while_live(async move { log.read_after(&user, after, REPLAY_BATCH).await }, taken, out)
                .await?;
            if batch.first().map_or(owed > sub.after, |c| c.seq != sub.after + 1) {
                out.send(resync(&sub.id, Resync::HistoryExpired)).await?;
                return Ok(false);
            }
            let full = batch.len() == REPLAY_BATCH;
            for change in &batch {
                if sub.wants(change) && !send_to_new(sub, change, out).await? {
                    return Ok(false);
                }
                sub.after = change.seq;
                // Keep the queue moving between replayed events too.
                while let Some(live) = self.rx.try_recv() {
                    taken.note(&live);
                    self.deliver(&live, out).await?;
                }
            }
            if full {
                continue;
            }
            // The log is read to its end: hand over what was taken off since, in order,
            // when all of it was kept; otherwise read again.
            if !hand_over(sub, taken, out).await? {
                return Ok(false);
            }
            if sub.after >= taken.newest {
                return Ok(true);
            }
            taken.reset();
        }
    }

    /// Run a database read while serving the live queue to the other subscriptions
    /// (noting what is taken off in `taken`); abandon it when the stream ends.
    async fn read_while_live<R, E, T>(
        &mut self,
        read: impl Future<Output = Result<R, E>>,
        taken: &mut TakenOff,
        out: &mut T,
    ) -> Result<R, StreamEnd>
    where
        T: Transport,
        StreamEnd: From<E>,
    {
        let shutdown = self.gateway.app().sessions_close().clone();
        let overflowed = self.rx.overflowed();
        let peer_gone = out.peer_gone();
        tokio::pin!(read, overflowed, peer_gone);
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return Err(StreamEnd::Shutdown),
                () = &mut overflowed => return Err(StreamEnd::SlowConsumer),
                () = &mut peer_gone => return Err(StreamEnd::Gone),
                result = &mut read => return result.map_err(StreamEnd::from),
                Some(change) = self.rx.recv() => {
                    taken.note(&change);
                    self.deliver(&change, out).await?;
                }
            }
        }
    }
}

/// The `subscribed` answer.
fn subscribed(id: &str, selection: &Selection) -> ServerFrame {
    let topics = selection.names.iter().chain(&selection.market).cloned().collect();
    ServerFrame::Subscribed { id: id.to_owned(), topics }
}

fn resync(id: &str, reason: Resync) -> Outgoing<'static> {
    Outgoing::Frame(resync_frame(id, reason))
}

/// Send `change` to a starting subscription that wants it. `Ok(false)`: it was a truncate
/// of one of its tables, and `resync_required` was sent instead (the subscription ends).
async fn send_to_new<T: Transport>(
    sub: &Subscription,
    change: &Arc<Change>,
    out: &mut T,
) -> Result<bool, StreamEnd> {
    if change.op == ChangeOp::Truncate {
        out.send(resync(&sub.id, Resync::Truncated)).await?;
        return Ok(false);
    }
    out.send(Outgoing::Event { sub: &sub.id, change }).await?;
    Ok(true)
}

/// Hand the kept changes right after `sub.after` to the new subscription, in order.
/// `Ok(false)`: one was a truncate, and `resync_required` was sent instead.
async fn hand_over<T: Transport>(
    sub: &mut Subscription,
    taken: &mut TakenOff,
    out: &mut T,
) -> Result<bool, StreamEnd> {
    for change in taken.after(sub.after) {
        if sub.wants(&change) && !send_to_new(sub, &change, out).await? {
            return Ok(false);
        }
        sub.after = change.seq;
    }
    Ok(true)
}

/// Live changes taken off a session's queue while one of its subscriptions starts: the
/// newest `seq`, and the changes themselves up to a bound.
struct TakenOff {
    newest: u64,
    kept: VecDeque<Arc<Change>>,
    /// Every change taken off since the last reset is in `kept`.
    complete: bool,
}

impl TakenOff {
    fn new() -> Self {
        Self { newest: 0, kept: VecDeque::new(), complete: true }
    }

    fn note(&mut self, change: &Arc<Change>) {
        self.newest = self.newest.max(change.seq);
        if self.complete && self.kept.len() < REPLAY_BATCH {
            self.kept.push_back(change.clone());
        } else {
            self.complete = false;
        }
    }

    /// The kept changes right after `after`, contiguous, when none was left out; they
    /// are handed over once. Otherwise nothing (the caller reads the log again).
    fn after(&mut self, after: u64) -> Vec<Arc<Change>> {
        while self.kept.front().is_some_and(|c| c.seq <= after) {
            self.kept.pop_front();
        }
        if !self.complete {
            return Vec::new();
        }
        let mut next = after + 1;
        let mut out = Vec::new();
        while let Some(c) = self.kept.pop_front() {
            if c.seq != next {
                break;
            }
            next += 1;
            out.push(c);
        }
        out
    }

    fn reset(&mut self) {
        self.kept.clear();
        self.complete = true;
    }
}

#[cfg(test)]
mod tests {
    use tradewire_protocol::ChangeOp;

    use super::*;

    fn change(seq: u64) -> Arc<Change> {
        Arc::new(Change::new(
            "u1".into(),
            "e1".into(),
            seq,
            "signals".into(),
            ChangeOp::Insert,
            vec![],
            0,
            None,
            None,
        ))
    }

    fn seqs(v: Vec<Arc<Change>>) -> Vec<u64> {
        v.iter().map(|c| c.seq).collect()
    }

    #[test]
    fn changes_taken_off_during_a_replay_are_handed_over_past_what_the_log_gave() {
        let mut taken = TakenOff::new();
        for seq in 5..=9 {
            taken.note(&change(seq));
        }
        // The log reached 6: 7, 8 and 9 come from memory, once.
        assert_eq!(seqs(taken.after(6)), vec![7, 8, 9]);
        assert_eq!(taken.newest, 9);
        assert!(taken.after(9).is_empty());
    }

    #[test]
    fn too_many_to_keep_means_reading_the_log_again() {
        let mut taken = TakenOff::new();
        for seq in 1..=(REPLAY_BATCH as u64 + 1) {
            taken.note(&change(seq));
        }
        assert!(taken.after(0).is_empty(), "incomplete: nothing is handed over");
        taken.reset();
        taken.note(&change(REPLAY_BATCH as u64 + 2));
        assert_eq!(seqs(taken.after(REPLAY_BATCH as u64 + 1)), vec![REPLAY_BATCH as u64 + 2]);
    }
}
