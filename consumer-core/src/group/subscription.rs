//! What a member subscribes to, whatever the group protocol: topic names
//! or a pattern (matched on the client by the classic protocol).

/// What a member subscribes to: Java's `subscribe(Collection)` or
/// `subscribe(Pattern)`.
#[derive(Debug, Clone)]
pub enum TopicSubscription {
    /// These topics, whether they exist yet or not: while one is missing,
    /// metadata is checked every second, so it is picked up soon after it
    /// is created (then every `metadata.max.age.ms`).
    Topics(Vec<String>),
    /// Every non-internal topic whose whole name matches, now or later
    /// (build it with [`TopicSubscription::pattern`]).
    Pattern(regex::Regex),
}

impl TopicSubscription {
    /// A pattern subscription. The regex must match a topic's *whole*
    /// name, as Java's `Pattern.matcher(topic).matches()`: `orders-.*`
    /// matches `orders-eu`, `orders` does not. Internal topics
    /// (`__consumer_offsets`, `__transaction_state`) never match (Java's
    /// `exclude.internal.topics=true`).
    ///
    /// # Errors
    /// The regex's syntax error.
    pub fn pattern(regex: &str) -> Result<Self, regex::Error> {
        regex::Regex::new(&format!("^(?:{regex})$")).map(TopicSubscription::Pattern)
    }

    pub(crate) fn is_pattern(&self) -> bool {
        matches!(self, TopicSubscription::Pattern(_))
    }

    /// Is `topic` part of this subscription?
    pub fn includes(&self, topic: &str) -> bool {
        match self {
            TopicSubscription::Topics(ts) => ts.iter().any(|t| t == topic),
            TopicSubscription::Pattern(re) => re.is_match(topic),
        }
    }
}

impl From<Vec<String>> for TopicSubscription {
    fn from(topics: Vec<String>) -> Self {
        TopicSubscription::Topics(topics)
    }
}
