//! [`Func`]: a user closure as a serializable value. Because Ember only
//! accepts zero-sized (non-capturing) closures, serializing one writes
//! nothing and deserializing conjures it from its type.

use super::anchor::{assert_zero_sized, conjure};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Bounds every closure handed to an RDD operation must meet.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be shipped to executors: Ember closures must not capture variables",
    note = "pass captured state explicitly with the `*_with(state, f)` variant, e.g. `map_with(state, |state, x| ...)`, or through a broadcast variable"
)]
pub trait ShippableFn: Copy + Send + Sync + 'static {}

impl<F: Copy + Send + Sync + 'static> ShippableFn for F {}

/// A zero-sized closure that can travel inside a node payload.
#[derive(Clone, Copy)]
pub struct Func<F>(F);

impl<F: ShippableFn> Func<F> {
    /// Wraps `f`; a capturing closure fails to compile here.
    pub const fn new(f: F) -> Self {
        assert_zero_sized::<F>();
        Func(f)
    }

    pub fn get(&self) -> &F {
        &self.0
    }
}

impl<F> Serialize for Func<F> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_unit()
    }
}

impl<'de, F: ShippableFn> Deserialize<'de> for Func<F> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <()>::deserialize(d)?;
        Ok(Func(conjure::<F>()))
    }
}
