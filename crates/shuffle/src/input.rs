//! Where the shuffle's writers and aggregators take their records from.
//!
//! Aggregation consumes a batch at a time ([`RecordInput::next_batch`]), so
//! a producer that can hand over a batch with one call — a stage's pipeline
//! of type-erased nodes — pays its virtual calls per batch, not per record.
//! The plain writer and the sorter take one record at a time
//! ([`RecordInput::next_record`]), which such a producer serves from a
//! buffered batch and a plain iterator of `Result`s serves directly.

use crate::error::{Error, Result};

/// A fallible source of records, read in batches or one at a time.
pub trait RecordInput<T> {
    /// Appends up to `max` (at least 1) next records to `out`; appends none
    /// only when the input has ended. An `Err` aborts the consumer.
    fn next_batch(&mut self, out: &mut Vec<T>, max: usize) -> Result<()>;

    /// The next record, `None` at the end. An input that can only hand
    /// over batches cheaply buffers one.
    fn next_record(&mut self) -> Result<Option<T>>;
}

impl<T, E: Into<Error>, I: Iterator<Item = std::result::Result<T, E>>> RecordInput<T> for I {
    fn next_batch(&mut self, out: &mut Vec<T>, max: usize) -> Result<()> {
        for rec in self.take(max) {
            out.push(rec.map_err(Into::into)?);
        }
        Ok(())
    }

    #[inline]
    fn next_record(&mut self) -> Result<Option<T>> {
        self.next().transpose().map_err(Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iterators_are_inputs_and_errors_stop_them() {
        let mut seen = Vec::new();
        let mut input = (0..10).map(|i| if i < 7 { Ok(i) } else { Err(Error::InvalidArgument(format!("bad {i}"))) });
        let err = loop {
            match input.next_record() {
                Ok(Some(x)) => seen.push(x),
                Ok(None) => panic!("the error was lost"),
                Err(e) => break e,
            }
        };
        assert_eq!(seen, vec![0, 1, 2, 3, 4, 5, 6]);
        assert!(err.to_string().contains("bad 7"), "{err}");
        let mut batch = Vec::new();
        let mut input = (0..10).map(|i| if i != 4 { Ok(i) } else { Err(Error::InvalidArgument("bad 4".into())) });
        input.next_batch(&mut batch, 3).unwrap();
        assert_eq!(batch, vec![0, 1, 2]);
        assert!(input.next_batch(&mut batch, 3).is_err());
    }
}
