//! Broadcast variables: a read-only value that closures use through the
//! `*_with` variants (`map_with(bc.clone(), |bc, x| bc.value()...)`).
//!
//! Cloning a [`Broadcast`] on the driver shares one `Arc`; the value is
//! serialized into a stage's payload, which travels once per executor per
//! stage attempt and is decoded once there, so every task of that stage on
//! that executor shares one copy.

use serde::{de::DeserializeOwned, Deserialize, Deserializer, Serialize, Serializer};
use std::sync::Arc;

pub struct Broadcast<T> {
    id: u64,
    value: Arc<T>,
}

impl<T> Clone for Broadcast<T> {
    fn clone(&self) -> Self {
        Broadcast { id: self.id, value: self.value.clone() }
    }
}

impl<T> Broadcast<T> {
    pub(crate) fn new(id: u64, value: T) -> Self {
        Broadcast { id, value: Arc::new(value) }
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn value(&self) -> &T {
        &self.value
    }
}

impl<T: Serialize> Serialize for Broadcast<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (self.id, &*self.value).serialize(s)
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Broadcast<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (id, value) = <(u64, T)>::deserialize(d)?;
        Ok(Broadcast { id, value: Arc::new(value) })
    }
}
