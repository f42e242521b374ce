//! A serde `Deserializer` over a parsed body that reads it as Go's
//! `encoding/json` reads it into the engine's structs.
//!
//! The schema is the target type itself: serde hands `deserialize_struct`
//! the names of the type's fields (bollard's models carry the API's own
//! spelling), so each object key is matched to a field here before serde
//! sees it: an exact match first, else a case-insensitive one, as Go does.
//! Keys that match no field are dropped (Go ignores them); keys of maps
//! (`Labels`, `DriverOpts`) are never touched. The same rules as Go's for
//! the rest: `null` leaves a value at its zero, any JSON object is a valid
//! empty struct such as `Global: {}`, and a value of the wrong JSON type is
//! Go's `UnmarshalTypeError` text, naming the field path.

use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use super::enums::{self, Unlisted};
use super::names::{go_integer, go_struct};
use super::DecodeError;

/// Where in the body a value sits, for Go's error texts: the innermost
/// struct and the field names from the root (Go's `errorContext`).
#[derive(Clone, Default)]
struct Context {
    strukt: Option<&'static str>,
    fields: Vec<&'static str>,
}

impl Context {
    fn field(&self, name: &'static str) -> Context {
        let mut fields = self.fields.clone();
        fields.push(name);
        Context {
            strukt: self.strukt,
            fields,
        }
    }

    fn inside(&self, strukt: &'static str) -> Context {
        Context {
            strukt: Some(strukt),
            fields: self.fields.clone(),
        }
    }

    /// Go's "json: cannot unmarshal <what> into Go (struct field|value) …".
    fn mismatch(&self, what: &str, go_type: &str) -> DecodeError {
        let into = match self.strukt {
            Some(s) if !self.fields.is_empty() => {
                format!("Go struct field {}.{}", go_struct(s), self.fields.join("."))
            }
            _ => "Go value".to_string(),
        };
        DecodeError::Type(format!(
            "json: cannot unmarshal {what} into {into} of type {go_type}"
        ))
    }
}

/// Reads `value` into `T` with Go's rules.
pub fn from_value<T: de::DeserializeOwned>(value: &Value) -> Result<T, DecodeError> {
    T::deserialize(Folded {
        value,
        context: Context::default(),
    })
}

struct Folded<'a> {
    value: &'a Value,
    context: Context,
}

/// The JSON kind as Go's `UnmarshalTypeError.Value` names it.
fn kind(value: &Value) -> String {
    match value {
        Value::Null => "null".to_string(),
        Value::Bool(_) => "bool".to_string(),
        Value::Number(_) => "number".to_string(),
        Value::String(_) => "string".to_string(),
        Value::Array(_) => "array".to_string(),
        Value::Object(_) => "object".to_string(),
    }
}

/// Go matches keys with Unicode simple case folding; besides ASCII it
/// folds the long s and the Kelvin sign, which `to_lowercase` handles
/// only for the latter.
pub fn fold_eq(field: &str, key: &str) -> bool {
    let fold = |c: char| {
        if c == 'ſ' {
            's'
        } else {
            c.to_lowercase().next().unwrap_or(c)
        }
    };
    field.chars().count() == key.chars().count()
        && field
            .chars()
            .zip(key.chars())
            .all(|(a, b)| fold(a) == fold(b))
}

/// The field a key sets: an exact match first, else the first field that
/// matches it case-insensitively, else none (the key is ignored).
fn field_for(key: &str, fields: &'static [&'static str]) -> Option<&'static str> {
    fields
        .iter()
        .find(|f| **f == key)
        .or_else(|| fields.iter().find(|f| fold_eq(f, key)))
        .copied()
}

/// An object's entries renamed to the fields they set, in document order.
/// When several keys set one field the last one wins, as in Go, which
/// decodes them in turn into the same field. Fields the object lacks are
/// given `null`, which reads as Go's zero value: Go accepts a body without
/// any field, serde would refuse one without a field the model requires
/// (`Templating: {"Name": …}`'s `Name`).
fn struct_entries<'a>(
    object: Option<&'a Map<String, Value>>,
    fields: &'static [&'static str],
) -> Vec<Entry<'a>> {
    let mut entries: Vec<Entry<'a>> = Vec::new();
    for (key, value) in object.into_iter().flatten() {
        let Some(field) = field_for(key, fields) else {
            continue;
        };
        entries.retain(|e| e.field != Some(field));
        entries.push(Entry {
            key: field,
            field: Some(field),
            value,
        });
    }
    for field in fields {
        if !entries.iter().any(|e| e.field == Some(*field)) {
            entries.push(Entry {
                key: field,
                field: Some(field),
                value: &NULL,
            });
        }
    }
    entries
}

/// The value of a field the body lacks. Immutable: a constant, not state.
static NULL: Value = Value::Null;

/// A map's entries, keys as sent.
fn map_entries(object: &Map<String, Value>) -> Vec<Entry<'_>> {
    object
        .iter()
        .map(|(key, value)| Entry {
            key,
            field: None,
            value,
        })
        .collect()
}

impl<'a> Folded<'a> {
    fn mismatch(&self, go_type: &str) -> DecodeError {
        self.context.mismatch(&kind(self.value), go_type)
    }

    /// A number into an integer of `go_type`: Go names the literal when it
    /// does not fit ("number -1", "number 1.5").
    fn integer<V: Visitor<'a>>(
        self,
        go_type: &str,
        visitor: V,
        signed: bool,
    ) -> Result<V::Value, DecodeError> {
        if let (Some((go, min, max)), Value::Number(n)) =
            (go_integer(&self.context.fields), self.value)
        {
            let fits = n.as_i64().map(i128::from).or(n.as_u64().map(i128::from));
            if !fits.is_some_and(|v| (min..=max).contains(&v)) {
                return Err(self.context.mismatch(&format!("number {n}"), go));
            }
        }
        match self.value {
            Value::Null => visitor.visit_u64(0),
            Value::Number(n) => match (signed, n.as_i64(), n.as_u64()) {
                (true, Some(i), _) => visitor.visit_i64(i),
                (false, _, Some(u)) => visitor.visit_u64(u),
                _ => Err(self.context.mismatch(&format!("number {n}"), go_type)),
            },
            _ => Err(self.mismatch(go_type)),
        }
    }
}

fn number_f64(n: &Number) -> f64 {
    n.as_f64().unwrap_or(0.0)
}

macro_rules! integers {
    ($($method:ident => $go:literal, $signed:literal;)*) => {
        $(fn $method<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DecodeError> {
            self.integer($go, visitor, $signed)
        })*
    };
}

impl<'a> de::Deserializer<'a> for Folded<'a> {
    type Error = DecodeError;

    /// Untyped targets (`serde_json::Value`, untagged enums) get the value
    /// as it is, keys untouched.
    fn deserialize_any<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match self.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Number(n) => match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => visitor.visit_u64(u),
                (_, Some(i)) => visitor.visit_i64(i),
                _ => visitor.visit_f64(number_f64(n)),
            },
            Value::String(s) => visitor.visit_str(s),
            Value::Array(items) => visitor.visit_seq(Items::new(items, self.context)),
            Value::Object(object) => {
                visitor.visit_map(Entries::new(map_entries(object), self.context))
            }
        }
    }

    fn deserialize_bool<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match self.value {
            Value::Null => visitor.visit_bool(false),
            Value::Bool(b) => visitor.visit_bool(*b),
            _ => Err(self.mismatch("bool")),
        }
    }

    integers! {
        deserialize_i8 => "int8", true;
        deserialize_i16 => "int16", true;
        deserialize_i32 => "int32", true;
        deserialize_i64 => "int64", true;
        deserialize_u8 => "uint8", false;
        deserialize_u16 => "uint16", false;
        deserialize_u32 => "uint32", false;
        deserialize_u64 => "uint64", false;
    }

    fn deserialize_f32<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_f64<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match self.value {
            Value::Null => visitor.visit_f64(0.0),
            Value::Number(n) => visitor.visit_f64(number_f64(n)),
            _ => Err(self.mismatch("float64")),
        }
    }

    fn deserialize_char<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_str<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match self.value {
            Value::Null => visitor.visit_str(""),
            Value::String(s) => visitor.visit_str(s),
            _ => Err(self.mismatch("string")),
        }
    }

    fn deserialize_string<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        self.deserialize_any(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        self.deserialize_any(visitor)
    }

    fn deserialize_option<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match self.value {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    /// Go's empty structs (`GlobalService`) take any object; so does `()`.
    fn deserialize_unit<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        visitor.visit_unit()
    }

    fn deserialize_unit_struct<V: Visitor<'a>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'a>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match self.value {
            Value::Null => visitor.visit_seq(Items::new(&[], self.context)),
            Value::Array(items) => visitor.visit_seq(Items::new(items, self.context)),
            _ => Err(self.mismatch("[]interface {}")),
        }
    }

    fn deserialize_tuple<V: Visitor<'a>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'a>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        self.deserialize_seq(visitor)
    }

    /// A map's keys are data, not field names: never folded.
    fn deserialize_map<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match self.value {
            Value::Null => visitor.visit_map(Entries::new(Vec::new(), self.context)),
            Value::Object(object) => {
                visitor.visit_map(Entries::new(map_entries(object), self.context))
            }
            _ => Err(self.mismatch("map[string]interface {}")),
        }
    }

    fn deserialize_struct<V: Visitor<'a>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        let entries = match self.value {
            Value::Null => struct_entries(None, fields),
            Value::Object(object) => struct_entries(Some(object), fields),
            _ => return Err(self.mismatch(&GoType(name).to_string())),
        };
        visitor.visit_map(Entries::new(entries, self.context.inside(name)))
    }

    /// bollard's enums are strings (`"start-first"`); null is Go's "". A
    /// value the enum lacks is what the engine makes of it (`enums`).
    fn deserialize_enum<V: Visitor<'a>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        let s = match self.value {
            Value::Null => return visitor.visit_enum("".into_deserializer()),
            Value::String(s) => s.as_str(),
            _ => return Err(self.mismatch("string")),
        };
        if variants.contains(&s) {
            return visitor.visit_enum(s.into_deserializer());
        }
        match enums::unlisted(&self.context.fields, s) {
            Some(Unlisted::Read(v)) => visitor.visit_enum(v.into_deserializer()),
            Some(Unlisted::Refused(text)) => Err(DecodeError::Refused(text)),
            None => visitor.visit_enum(s.into_deserializer()),
        }
    }

    fn deserialize_identifier<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        visitor.visit_unit()
    }
}

/// A struct's Go name in a type position ("swarm.ServiceMode").
struct GoType(&'static str);

impl std::fmt::Display for GoType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}.{}",
            super::names::go_package(self.0),
            go_struct(self.0)
        )
    }
}

struct Items<'a> {
    items: std::slice::Iter<'a, Value>,
    context: Context,
}

impl<'a> Items<'a> {
    fn new(items: &'a [Value], context: Context) -> Self {
        Items {
            items: items.iter(),
            context,
        }
    }
}

impl<'a> SeqAccess<'a> for Items<'a> {
    type Error = DecodeError;

    fn next_element_seed<T: DeserializeSeed<'a>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DecodeError> {
        match self.items.next() {
            None => Ok(None),
            Some(value) => seed
                .deserialize(Folded {
                    value,
                    context: self.context.clone(),
                })
                .map(Some),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

/// One entry of an object; `field` is the struct field it sets (already
/// its key), which extends the path of Go's error texts.
struct Entry<'a> {
    key: &'a str,
    field: Option<&'static str>,
    value: &'a Value,
}

struct Entries<'a> {
    entries: std::vec::IntoIter<Entry<'a>>,
    pending: Option<Entry<'a>>,
    context: Context,
}

impl<'a> Entries<'a> {
    fn new(entries: Vec<Entry<'a>>, context: Context) -> Self {
        Entries {
            entries: entries.into_iter(),
            pending: None,
            context,
        }
    }
}

impl<'a> MapAccess<'a> for Entries<'a> {
    type Error = DecodeError;

    fn next_key_seed<K: DeserializeSeed<'a>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DecodeError> {
        let Some(entry) = self.entries.next() else {
            return Ok(None);
        };
        let key = entry.key;
        self.pending = Some(entry);
        seed.deserialize(Key(key)).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'a>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, DecodeError> {
        let Some(entry) = self.pending.take() else {
            return Err(DecodeError::Type(
                "json: a value was asked for before its key".to_string(),
            ));
        };
        let context = match entry.field {
            Some(field) => self.context.field(field),
            None => self.context.clone(),
        };
        seed.deserialize(Folded {
            value: entry.value,
            context,
        })
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

/// A key of an object. Keys are strings; `()` keys (bollard's model of
/// Go's empty structs as `HashMap<(), ()>`) accept any.
struct Key<'a>(&'a str);

impl<'de> de::Deserializer<'de> for Key<'de> {
    type Error = DecodeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        visitor.visit_str(self.0)
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}
