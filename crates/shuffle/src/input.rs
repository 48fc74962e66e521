//! Where the shuffle's writers and aggregators take their records from.
//!
//! They consume a batch at a time ([`RecordInput::next_batch`]), so a
//! producer that can hand over a batch with one call — a stage's pipeline of
//! type-erased nodes — pays its virtual calls per batch, not per record. Any
//! iterator of `Result`s is an input too, read one record at a time.

use crate::error::{Error, Result};

/// A fallible source of records, read in batches.
pub trait RecordInput<T> {
    /// Appends up to `max` (at least 1) next records to `out`; appends none
    /// only when the input has ended. An `Err` aborts the consumer.
    fn next_batch(&mut self, out: &mut Vec<T>, max: usize) -> Result<()>;
}

impl<T, E: Into<Error>, I: Iterator<Item = std::result::Result<T, E>>> RecordInput<T> for I {
    fn next_batch(&mut self, out: &mut Vec<T>, max: usize) -> Result<()> {
        for rec in self.take(max) {
            out.push(rec.map_err(Into::into)?);
        }
        Ok(())
    }
}

/// Records pulled at a time by consumers that handle one record at a time.
pub(crate) const RECORD_BATCH: usize = 64;

/// Reads an input one record at a time, pulling it in batches.
pub(crate) struct Pull<T, I> {
    input: I,
    /// The rest of the current batch, last record first.
    rest: Vec<T>,
    batch: usize,
}

impl<T, I: RecordInput<T>> Pull<T, I> {
    pub(crate) fn new(input: I, batch: usize) -> Self {
        Pull { input, rest: Vec::with_capacity(batch), batch }
    }

    /// The next record, `None` at the end.
    #[inline]
    pub(crate) fn next(&mut self) -> Result<Option<T>> {
        if let Some(x) = self.rest.pop() {
            return Ok(Some(x));
        }
        self.input.next_batch(&mut self.rest, self.batch)?;
        self.rest.reverse();
        Ok(self.rest.pop())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iterators_are_inputs_and_errors_stop_them() {
        let mut seen = Vec::new();
        let input = (0..10).map(|i| if i < 7 { Ok(i) } else { Err(Error::InvalidArgument(format!("bad {i}"))) });
        let mut pull = Pull::new(input, 3);
        let err = loop {
            match pull.next() {
                Ok(Some(x)) => seen.push(x),
                Ok(None) => panic!("the error was lost"),
                Err(e) => break e,
            }
        };
        // The failing batch's records before the error are not delivered.
        assert_eq!(seen, vec![0, 1, 2, 3, 4, 5]);
        assert!(err.to_string().contains("bad 7"), "{err}");
    }
}
