//! An ordered JSON object writer with Go protojson's conventions.
//!
//! LiveKit serialises webhooks with Go's protojson: fields in declaration order,
//! 64-bit integers as JSON strings, 32-bit integers as numbers, enums by name, and
//! zero values left out. `serde_json::json!` sorts keys and has no notion of "zero
//! means absent", so the [`webhook`](super::webhook) builders write through this instead.

/// A JSON object under construction; each method appends one field (or nothing, for a
/// zero value).
#[derive(Clone, Debug, Default)]
pub struct Obj {
    fields: String,
}

impl Obj {
    pub fn new() -> Obj {
        Obj::default()
    }

    fn key(&mut self, key: &str) {
        if !self.fields.is_empty() {
            self.fields.push(',');
        }
        self.fields.push_str(&quote(key));
        self.fields.push(':');
    }

    /// A `string` field; omitted when empty.
    pub fn string(mut self, key: &str, value: &str) -> Obj {
        if !value.is_empty() {
            self.key(key);
            self.fields.push_str(&quote(value));
        }
        self
    }

    /// An `int64`/`uint64` field, written as a JSON string; omitted when 0.
    pub fn int64(mut self, key: &str, value: i64) -> Obj {
        if value != 0 {
            self.key(key);
            self.fields.push_str(&format!("\"{value}\""));
        }
        self
    }

    /// An `int32`/`uint32` field, written as a JSON number; omitted when 0.
    pub fn int32(mut self, key: &str, value: i64) -> Obj {
        if value != 0 {
            self.key(key);
            self.fields.push_str(&value.to_string());
        }
        self
    }

    /// A `bool` field; omitted when false.
    pub fn boolean(mut self, key: &str, value: bool) -> Obj {
        if value {
            self.key(key);
            self.fields.push_str("true");
        }
        self
    }

    /// An enum field by name; omitted when empty or equal to the enum's zero value.
    pub fn enumeration(self, key: &str, name: &str, zero: &str) -> Obj {
        if name == zero {
            self
        } else {
            self.string(key, name)
        }
    }

    /// A message field; written whenever set, even if all its fields are zero.
    pub fn object(mut self, key: &str, value: Obj) -> Obj {
        self.key(key);
        self.fields.push_str(&value.build());
        self
    }

    /// A repeated message field; omitted when empty.
    pub fn list(mut self, key: &str, items: Vec<Obj>) -> Obj {
        if !items.is_empty() {
            self.key(key);
            let items: Vec<String> = items.into_iter().map(Obj::build).collect();
            self.fields.push_str(&format!("[{}]", items.join(",")));
        }
        self
    }

    /// A `map<string, string>` field with keys sorted; omitted when empty.
    pub fn map(self, key: &str, entries: &[(String, String)]) -> Obj {
        if entries.is_empty() {
            return self;
        }
        let mut sorted: Vec<&(String, String)> = entries.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        let inner = sorted
            .into_iter()
            .fold(Obj::new(), |obj, (k, v)| obj.always_string(k, v));
        self.object(key, inner)
    }

    /// A string written even when empty (map values are not omitted).
    fn always_string(mut self, key: &str, value: &str) -> Obj {
        self.key(key);
        self.fields.push_str(&quote(value));
        self
    }

    /// The finished object as compact JSON text.
    pub fn build(self) -> String {
        format!("{{{}}}", self.fields)
    }
}

fn quote(text: &str) -> String {
    serde_json::to_string(text).expect("strings serialise")
}
