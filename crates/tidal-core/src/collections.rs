//! The state's ordered maps and sets: persistent, so a copy is O(1).
//!
//! [`Map`] and [`Set`] are imbl's `OrdMap` and `OrdSet` (B-trees whose nodes
//! are shared between copies and copied on write), so a snapshot can take a
//! consistent copy of the whole state between two applies and encode it
//! while apply goes on. They iterate in key order, as `BTreeMap` and
//! `BTreeSet` do, and are encoded (serde: a length, then the items in
//! order) and hashed (a length, then the items) exactly as those are, so
//! snapshots, backups and [`crate::State::digest`] are the same bytes and
//! numbers as with std's collections.
//!
//! Everything else of `OrdMap`/`OrdSet` is reached through `Deref`.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::{Deref, DerefMut};

use std::marker::PhantomData;

use serde::de::{MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// In-order iterators of [`Map`] and [`Set`].
pub type MapIter<'a, K, V> = imbl::ordmap::Iter<'a, K, V, imbl::shared_ptr::DefaultSharedPtr>;
pub type SetIter<'a, T> = imbl::ordset::Iter<'a, T, imbl::shared_ptr::DefaultSharedPtr>;

/// An ordered map whose copies share their nodes.
#[derive(Clone)]
pub struct Map<K, V>(imbl::OrdMap<K, V>);

/// An ordered set whose copies share their nodes.
#[derive(Clone)]
pub struct Set<T>(imbl::OrdSet<T>);

impl<K: Ord + Clone, V: Clone> Map<K, V> {
    pub fn new() -> Self {
        Map(imbl::OrdMap::new())
    }

    /// The value of `key`, inserted with `V::default()` first if absent.
    pub fn entry_or_default(&mut self, key: K) -> &mut V
    where
        V: Default,
    {
        self.0.entry(key).or_default()
    }

    /// The first entry in key order.
    pub fn first_key_value(&self) -> Option<(&K, &V)> {
        self.0.get_min().map(|(k, v)| (k, v))
    }

    /// The last entry in key order.
    pub fn last_key_value(&self) -> Option<(&K, &V)> {
        self.0.get_max().map(|(k, v)| (k, v))
    }

    /// Removes `key`, returning its value.
    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.0.remove(key)
    }

    /// Keeps the entries for which `keep` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &V) -> bool) {
        let gone: Vec<K> = self
            .0
            .iter()
            .filter(|(k, v)| !keep(k, v))
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            self.0.remove(&k);
        }
    }
}

impl<T: Ord + Clone> Set<T> {
    pub fn new() -> Self {
        Set(imbl::OrdSet::new())
    }

    /// Inserts `value`; true if it was not there.
    pub fn insert(&mut self, value: T) -> bool {
        self.0.insert(value).is_none()
    }

    /// Removes `value`; true if it was there.
    pub fn remove<Q>(&mut self, value: &Q) -> bool
    where
        T: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.0.remove(value).is_some()
    }

    /// The smallest element.
    pub fn first(&self) -> Option<&T> {
        self.0.get_min()
    }

    /// The largest element.
    pub fn last(&self) -> Option<&T> {
        self.0.get_max()
    }
}

impl<K: Ord + PartialEq, V: PartialEq> PartialEq for Map<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl<K: Ord + Eq, V: Eq> Eq for Map<K, V> {}

impl<T: Ord> PartialEq for Set<T> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl<T: Ord> Eq for Set<T> {}

impl<K, V> Default for Map<K, V> {
    fn default() -> Self {
        Map(imbl::OrdMap::default())
    }
}

impl<T> Default for Set<T> {
    fn default() -> Self {
        Set(imbl::OrdSet::default())
    }
}

impl<K, V> Deref for Map<K, V> {
    type Target = imbl::OrdMap<K, V>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl<K, V> DerefMut for Map<K, V> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl<T> Deref for Set<T> {
    type Target = imbl::OrdSet<T>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl<T> DerefMut for Set<T> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

/// As `BTreeMap` hashes: the length, then each (key, value) in order.
impl<K: Ord + Hash, V: Hash> Hash for Map<K, V> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        h.write_usize(self.0.len());
        for entry in self.0.iter() {
            entry.hash(h);
        }
    }
}

/// As `BTreeSet` hashes: the length, then each element in order.
impl<T: Ord + Hash> Hash for Set<T> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        h.write_usize(self.0.len());
        for item in self.0.iter() {
            item.hash(h);
        }
    }
}

impl<K: fmt::Debug + Ord, V: fmt::Debug> fmt::Debug for Map<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.0.iter()).finish()
    }
}

impl<T: fmt::Debug + Ord> fmt::Debug for Set<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.iter()).finish()
    }
}

impl<K: Ord + Clone, V: Clone> FromIterator<(K, V)> for Map<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Map(iter.into_iter().collect())
    }
}

impl<T: Ord + Clone> FromIterator<T> for Set<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        Set(iter.into_iter().collect())
    }
}

impl<'a, K: Ord, V> IntoIterator for &'a Map<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = MapIter<'a, K, V>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<'a, T: Ord> IntoIterator for &'a Set<T> {
    type Item = &'a T;
    type IntoIter = SetIter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// A map as serde sees `BTreeMap`: a map of its entries in key order.
impl<K: Serialize + Ord, V: Serialize> Serialize for Map<K, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0.iter() {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// A set as serde sees `BTreeSet`: a sequence of its elements in order.
impl<T: Serialize + Ord> Serialize for Set<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for item in self.0.iter() {
            seq.serialize_element(item)?;
        }
        seq.end()
    }
}

/// Decodes straight into the tree, one entry at a time (no second copy).
impl<'de, K, V> Deserialize<'de> for Map<K, V>
where
    K: Deserialize<'de> + Ord + Clone,
    V: Deserialize<'de> + Clone,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries<K, V>(PhantomData<(K, V)>);
        impl<'de, K, V> Visitor<'de> for Entries<K, V>
        where
            K: Deserialize<'de> + Ord + Clone,
            V: Deserialize<'de> + Clone,
        {
            type Value = Map<K, V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
                let mut map = Map::new();
                while let Some((k, v)) = access.next_entry()? {
                    map.0.insert(k, v);
                }
                Ok(map)
            }
        }
        d.deserialize_map(Entries(PhantomData))
    }
}

/// Decodes straight into the tree, one element at a time.
impl<'de, T> Deserialize<'de> for Set<T>
where
    T: Deserialize<'de> + Ord + Clone,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Items<T>(PhantomData<T>);
        impl<'de, T> Visitor<'de> for Items<T>
        where
            T: Deserialize<'de> + Ord + Clone,
        {
            type Value = Set<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a sequence")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
                let mut set = Set::new();
                while let Some(item) = access.next_element()? {
                    set.0.insert(item);
                }
                Ok(set)
            }
        }
        d.deserialize_seq(Items(PhantomData))
    }
}
