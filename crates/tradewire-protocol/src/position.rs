//! Stream positions: `(epoch, seq)` and their text form `<epoch>:<seq>`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A position in one user's stream. `seq` is the last change the holder has seen; `0` means
/// "before the first change". `epoch` names the life of the replay log: when the log is
/// reset, the epoch changes and old positions can no longer be served.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Position {
    pub epoch: String,
    pub seq: u64,
}

impl Position {
    pub fn new(epoch: impl Into<String>, seq: u64) -> Self {
        Self { epoch: epoch.into(), seq }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.epoch, self.seq)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a position is written <epoch>:<seq>, e.g. e1:41")]
pub struct ParsePositionError;

impl FromStr for Position {
    type Err = ParsePositionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (epoch, seq) = s.rsplit_once(':').ok_or(ParsePositionError)?;
        if epoch.is_empty() || epoch.len() > 64 {
            return Err(ParsePositionError);
        }
        let seq = seq.parse().map_err(|_| ParsePositionError)?;
        Ok(Self::new(epoch, seq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips() {
        let p: Position = "e1:41".parse().unwrap();
        assert_eq!(p, Position::new("e1", 41));
        assert_eq!(p.to_string(), "e1:41");
    }

    #[test]
    fn malformed_text_is_rejected() {
        for bad in ["", "41", ":41", "e1:", "e1:-1", "e1:x", "e1:1.5"] {
            assert!(bad.parse::<Position>().is_err(), "{bad:?} should not parse");
        }
    }
}
