//! A large upstream transaction, spilled to a temporary file while it is received.
//!
//! Logical capture may publish nothing of a transaction before its Commit, so it has to
//! keep the transaction's rows until then. The first [`SPILL_AFTER`] rows stay in memory;
//! past that, each row's pgoutput message is appended to an anonymous temporary file (in
//! `TMPDIR`, gone when closed) exactly as it arrived, and decoded again when the
//! transaction is numbered. A bulk `UPDATE` of millions of rows costs disk, not memory.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};

/// Rows of one transaction kept in memory before the rest goes to disk.
pub const SPILL_AFTER: usize = 10_000;

/// Row messages of one transaction, appended as length-prefixed records.
pub struct Spill {
    file: BufWriter<File>,
    count: usize,
}

impl Spill {
    pub fn new() -> io::Result<Self> {
        Ok(Self { file: BufWriter::with_capacity(1 << 20, tempfile::tempfile()?), count: 0 })
    }

    pub fn push(&mut self, message: &[u8]) -> io::Result<()> {
        let len = u32::try_from(message.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a row message over 4 GiB"))?;
        self.file.write_all(&len.to_le_bytes())?;
        self.file.write_all(message)?;
        self.count += 1;
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.count
    }

    /// The messages, in the order they were pushed.
    pub fn read(self) -> io::Result<Messages> {
        let mut file = self.file.into_inner().map_err(io::IntoInnerError::into_error)?;
        file.seek(SeekFrom::Start(0))?;
        Ok(Messages { file: BufReader::with_capacity(1 << 20, file), left: self.count })
    }
}

/// Reads a [`Spill`] back, one message at a time.
pub struct Messages {
    file: BufReader<File>,
    left: usize,
}

impl Iterator for Messages {
    type Item = io::Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let mut len = [0u8; 4];
        let read = self.file.read_exact(&mut len).and_then(|()| {
            let mut message = vec![0u8; u32::from_le_bytes(len) as usize];
            self.file.read_exact(&mut message).map(|()| message)
        });
        Some(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_come_back_in_order_and_whole() {
        let mut spill = Spill::new().unwrap();
        let messages: Vec<Vec<u8>> = (0..1000u32).map(|i| vec![(i % 251) as u8; (i % 97) as usize]).collect();
        for m in &messages {
            spill.push(m).unwrap();
        }
        assert_eq!(spill.len(), 1000);
        let back: Vec<Vec<u8>> = spill.read().unwrap().collect::<io::Result<_>>().unwrap();
        assert_eq!(back, messages);
    }
}
