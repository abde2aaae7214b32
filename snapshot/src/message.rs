//! The text of a condition message, which many verdicts may share.

use std::borrow::Cow;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use serde::{Serialize, Serializer};

/// A condition message. Most are fixed sentences, and many objects get the same text (every
/// subscription to a route whose limits it lowers, say), so the text is fixed, owned, or shared.
/// Compares, prints and serialises as the text alone, whichever form holds it.
#[derive(Clone)]
pub enum Message {
    /// A fixed sentence.
    Static(&'static str),
    /// Text written for one object.
    Owned(String),
    /// Text shared by the verdicts of several objects.
    Shared(Arc<str>),
}

impl Message {
    /// The text.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Static(s) => s,
            Self::Owned(s) => s,
            Self::Shared(s) => s,
        }
    }
}

impl Deref for Message {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Message {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq for Message {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Message {}

impl PartialEq<str> for Message {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Message {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Serialize for Message {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl From<&'static str> for Message {
    fn from(s: &'static str) -> Self {
        Self::Static(s)
    }
}

impl From<String> for Message {
    fn from(s: String) -> Self {
        Self::Owned(s)
    }
}

impl From<Arc<str>> for Message {
    fn from(s: Arc<str>) -> Self {
        Self::Shared(s)
    }
}

impl From<Cow<'static, str>> for Message {
    fn from(s: Cow<'static, str>) -> Self {
        match s {
            Cow::Borrowed(s) => Self::Static(s),
            Cow::Owned(s) => Self::Owned(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_compare_print_and_serialise_as_their_text() {
        let forms = [
            Message::from("Ready."),
            Message::from("Ready.".to_string()),
            Message::from(Arc::<str>::from("Ready.")),
        ];
        for a in &forms {
            assert_eq!(a, "Ready.");
            assert_eq!(a.to_string(), "Ready.");
            assert_eq!(format!("{a:?}"), "\"Ready.\"");
            assert_eq!(serde_json::to_string(a).unwrap(), "\"Ready.\"");
            for b in &forms {
                assert_eq!(a, b);
            }
        }
        assert_ne!(Message::from("a"), Message::from("b".to_string()));
    }
}
