//! [`Topic`]: a topic name made once and shared by every record sent to it.
//!
//! ```text
//!  Topic::new("orders") ──clone──▶ ProducerRecord::new(&orders)  (a reference count, no copy)
//!        │
//!        └── cache: (this producer, its entry for "orders"), set on the first send
//!            ▶ later sends skip the producer's topic map (its lock, hash and compare)
//! ```
//!
//! A `ProducerRecord::new("orders")` still works: it makes a `Topic` of its
//! own, which costs what the `String` it replaced cost (one allocation and
//! a copy of the name per record) and finds the producer's entry by name.

use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, OnceLock, Weak};

use super::{Shared, TopicEntry};

/// A topic's name, made once and cloned into each record: a clone is a
/// reference-count increment, not an allocation and a copy of the name.
///
/// `ProducerRecord::new` takes a `Topic`, a `&Topic`, a `&str` or a
/// `String`. Passing a `Topic` made once is the fast way: the first
/// [`Producer`](super::Producer) that sends a record of it remembers its
/// per-topic state in it, so later sends do not look the name up.
///
/// Compares, prints and dereferences as the name (`str`). It is a handle,
/// not a map key: it implements neither `Hash` nor `Ord` (its remembered
/// producer state is interior-mutable, which clippy's `mutable_key_type`
/// would flag in every map keyed by it); key maps by `as_str()` or a
/// `String`.
///
/// ```
/// use kafka_wire::{ProducerRecord, Topic};
///
/// let orders = Topic::new("orders");
/// let record = ProducerRecord::new(&orders).value("v");
/// assert_eq!(record.topic, "orders");
/// assert_eq!(orders.as_str(), "orders");
/// ```
#[derive(Clone, Default)]
pub struct Topic(Arc<Inner>);

#[derive(Default)]
struct Inner {
    name: Box<str>,
    /// The first producer that sent a record of this topic, and its entry
    /// for it. `Weak`, so a cached producer's allocation stays put (a
    /// pointer comparison cannot match a new producer at the same address)
    /// without keeping the producer alive.
    cache: OnceLock<(Weak<Shared>, Arc<TopicEntry>)>,
}

impl Topic {
    /// A topic named `name` (one allocation and a copy of the name).
    pub fn new(name: impl AsRef<str>) -> Self {
        Self(Arc::new(Inner {
            name: name.as_ref().into(),
            cache: OnceLock::new(),
        }))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0.name
    }

    /// The producer's entry for this topic if `shared` is the producer this
    /// handle remembers.
    pub(super) fn cached_entry(&self, shared: &Arc<Shared>) -> Option<&TopicEntry> {
        let (producer, entry) = self.0.cache.get()?;
        std::ptr::eq(producer.as_ptr(), Arc::as_ptr(shared)).then_some(&**entry)
    }

    /// Remember `entry` as `shared`'s entry for this topic, if no producer
    /// is remembered yet (the first producer keeps the place).
    pub(super) fn remember(&self, shared: &Arc<Shared>, entry: &Arc<TopicEntry>) {
        let _ = self.0.cache.set((Arc::downgrade(shared), entry.clone()));
    }
}

impl Deref for Topic {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Topic {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq for Topic {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.as_str() == other.as_str()
    }
}

impl Eq for Topic {}

macro_rules! eq_with {
    ($($t:ty),*) => {$(
        impl PartialEq<$t> for Topic {
            fn eq(&self, other: &$t) -> bool {
                self.as_str() == AsRef::<str>::as_ref(other)
            }
        }
        impl PartialEq<Topic> for $t {
            fn eq(&self, other: &Topic) -> bool {
                AsRef::<str>::as_ref(self) == other.as_str()
            }
        }
    )*};
}
eq_with!(str, &str, String, Arc<str>);

impl From<&str> for Topic {
    fn from(name: &str) -> Self {
        Topic::new(name)
    }
}

impl From<String> for Topic {
    fn from(name: String) -> Self {
        Topic::new(name)
    }
}

impl From<&String> for Topic {
    fn from(name: &String) -> Self {
        Topic::new(name)
    }
}

impl From<Arc<str>> for Topic {
    fn from(name: Arc<str>) -> Self {
        Topic::new(&*name)
    }
}

impl From<&Topic> for Topic {
    fn from(topic: &Topic) -> Self {
        topic.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topic_compares_and_prints_as_its_name() {
        let t = Topic::new("orders");
        assert_eq!(t, "orders");
        assert_eq!("orders", t);
        assert_eq!(t, String::from("orders"));
        assert_eq!(t, Topic::from(String::from("orders")));
        assert_ne!(t, Topic::new("payments"));
        assert_eq!(format!("{t} {t:?}"), "orders \"orders\"");
        assert_eq!(t.len(), 6, "derefs to str");
    }

    #[test]
    fn records_and_reports_cross_tasks() {
        fn send_sync<T: Send + Sync + 'static>() {}
        send_sync::<Topic>();
        send_sync::<super::super::ProducerRecord>();
        send_sync::<super::super::Undelivered>();
    }

    #[test]
    fn a_clone_shares_the_name() {
        let t = Topic::new("orders");
        let c = Topic::from(&t);
        assert!(Arc::ptr_eq(&t.0, &c.0));
        assert!(std::ptr::eq(t.as_str(), c.as_str()));
    }
}
