//! Admission: caps on streaming connections per user and per source address, on SSE
//! streams, and on WebSockets that have not authenticated yet. A connection over a cap is
//! refused with HTTP 429 before the upgrade (or, when a WebSocket authenticates with its
//! first frame, closed with 4029). Each admitted connection holds [`Ticket`]s that give
//! its places back when it ends, so the tables only hold users and addresses that are
//! connected.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The caps (0: no cap).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionLimits {
    /// WebSocket and SSE connections of one user.
    pub per_user: usize,
    /// WebSocket and SSE connections from one source address (behind a load balancer that
    /// does not keep client addresses, set 0).
    pub per_address: usize,
    /// SSE streams in all.
    pub sse_streams: usize,
    /// WebSockets upgraded without a token that have not sent their `auth` frame yet.
    pub unauthenticated: usize,
}

impl Default for AdmissionLimits {
    fn default() -> Self {
        Self { per_user: 64, per_address: 1024, sse_streams: 10_000, unauthenticated: 1024 }
    }
}

/// Which cap refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("too many connections for this user (at most {0})")]
    User(usize),
    #[error("too many connections from this address (at most {0})")]
    Address(usize),
    #[error("too many SSE streams (at most {0})")]
    SseStreams(usize),
    #[error("too many connections waiting to authenticate (at most {0})")]
    Unauthenticated(usize),
}

impl Refused {
    fn label(self) -> &'static str {
        match self {
            Refused::User(_) => "user",
            Refused::Address(_) => "address",
            Refused::SseStreams(_) => "sse",
            Refused::Unauthenticated(_) => "unauthenticated",
        }
    }
}

/// Counts per key; a key leaves the table with its last connection.
#[derive(Debug)]
struct Counts<K>(Mutex<HashMap<K, usize>>);

impl<K: Hash + Eq> Counts<K> {
    fn take(&self, key: K, cap: usize) -> bool {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(key).or_insert(0);
        if cap > 0 && *n >= cap {
            return false;
        }
        *n += 1;
        true
    }

    fn give(&self, key: &K) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                map.remove(key);
            }
        }
    }

    fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// The gateway's admission counters. Shared by every connection.
#[derive(Debug)]
pub struct Admission {
    limits: AdmissionLimits,
    users: Counts<Arc<str>>,
    addresses: Counts<IpAddr>,
    /// `()` keys: a single count each.
    sse: Counts<()>,
    unauthenticated: Counts<()>,
}

/// A place taken by one connection, given back on drop.
#[derive(Debug)]
pub struct Ticket {
    admission: Arc<Admission>,
    place: Place,
}

#[derive(Debug)]
enum Place {
    User(Arc<str>),
    Address(IpAddr),
    Sse,
    Unauthenticated,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let a = &self.admission;
        match &self.place {
            Place::User(u) => a.users.give(u),
            Place::Address(ip) => a.addresses.give(ip),
            Place::Sse => a.sse.give(&()),
            Place::Unauthenticated => a.unauthenticated.give(&()),
        }
    }
}

impl Admission {
    pub fn new(limits: AdmissionLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            users: Counts(Mutex::default()),
            addresses: Counts(Mutex::default()),
            sse: Counts(Mutex::default()),
            unauthenticated: Counts(Mutex::default()),
        })
    }

    fn admit(self: &Arc<Self>, ok: bool, place: Place, refused: Refused) -> Result<Ticket, Refused> {
        if ok {
            Ok(Ticket { admission: self.clone(), place })
        } else {
            metrics::counter!("tradewire_admission_refused_total", "cap" => refused.label()).increment(1);
            Err(refused)
        }
    }

    pub fn address(self: &Arc<Self>, ip: IpAddr) -> Result<Ticket, Refused> {
        let cap = self.limits.per_address;
        self.admit(self.addresses.take(ip, cap), Place::Address(ip), Refused::Address(cap))
    }

    pub fn user(self: &Arc<Self>, user: &str) -> Result<Ticket, Refused> {
        let (cap, user): (usize, Arc<str>) = (self.limits.per_user, user.into());
        self.admit(self.users.take(user.clone(), cap), Place::User(user), Refused::User(cap))
    }

    pub fn sse(self: &Arc<Self>) -> Result<Ticket, Refused> {
        let cap = self.limits.sse_streams;
        self.admit(self.sse.take((), cap), Place::Sse, Refused::SseStreams(cap))
    }

    pub fn unauthenticated(self: &Arc<Self>) -> Result<Ticket, Refused> {
        let cap = self.limits.unauthenticated;
        self.admit(self.unauthenticated.take((), cap), Place::Unauthenticated, Refused::Unauthenticated(cap))
    }

    /// Users and addresses with a connection now.
    pub fn tracked(&self) -> (usize, usize) {
        (self.users.len(), self.addresses.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_capped_and_given_back_and_the_tables_empty() {
        let a = Admission::new(AdmissionLimits {
            per_user: 2,
            per_address: 3,
            sse_streams: 1,
            unauthenticated: 0,
        });
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let u1 = a.user("alice").unwrap();
        let u2 = a.user("alice").unwrap();
        assert_eq!(a.user("alice").unwrap_err(), Refused::User(2));
        let b = a.user("bob").unwrap();
        drop(u1);
        let u3 = a.user("alice").unwrap();
        let addrs: Vec<Ticket> = (0..3).map(|_| a.address(ip).unwrap()).collect();
        assert_eq!(a.address(ip).unwrap_err(), Refused::Address(3));
        let s = a.sse().unwrap();
        assert_eq!(a.sse().unwrap_err(), Refused::SseStreams(1));
        let pending: Vec<Ticket> = (0..100).map(|_| a.unauthenticated().unwrap()).collect();
        assert_eq!(a.tracked(), (2, 1));
        drop((u2, u3, b, addrs, s, pending));
        assert_eq!(a.tracked(), (0, 0), "nothing stays behind");
        assert!(a.sse().is_ok());
    }
}
