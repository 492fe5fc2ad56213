//! Typed decoding that reports every wrong type against its field path.
//!
//! `serde_path_to_error` names the path of the first type error only. To
//! report them all (as `devenv admit` does for a file the API server never
//! checked), the offending value is replaced by a stand-in of the right type
//! and the decode retried: the stand-ins keep list indices where they were,
//! and the caller skips its rules wherever a type error was reported.

use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use serde_path_to_error::Segment;

use super::FieldError;

/// Stand-ins tried in turn, until the value at the path decodes: `null` for
/// optional fields, then one of each JSON type.
const STAND_INS: [fn() -> Value; 6] = [
    || Value::Null,
    || json!(""),
    || json!(0),
    || json!(false),
    || json!([]),
    || json!({}),
];

/// More rounds than any object could need; bounds a decode that never settles.
const MAX_ROUNDS: usize = 512;

/// A decoded value (none if a type error could not be stood in for) and every
/// type error, in the order found, against `prefix` and its path.
#[derive(Debug)]
pub struct Decoded<T> {
    pub value: Option<T>,
    pub type_errors: Vec<FieldError>,
}

#[derive(Clone, Debug, PartialEq)]
enum Key {
    Field(String),
    Index(usize),
}

pub fn decode<T: DeserializeOwned>(prefix: &str, mut json: Value) -> Decoded<T> {
    let mut type_errors = Vec::new();
    // The path being stood in for, and the stand-in it holds.
    let mut filling: Option<(Vec<Key>, usize)> = None;
    for _ in 0..MAX_ROUNDS {
        let error = match serde_path_to_error::deserialize::<_, T>(&json) {
            Ok(value) => {
                return Decoded {
                    value: Some(value),
                    type_errors,
                };
            }
            Err(error) => error,
        };
        let Some((path, reason)) = locate(&json, &error) else {
            type_errors.push(FieldError::new(prefix, error.inner().to_string()));
            break;
        };
        let next = match &filling {
            Some((filled, tried)) if *filled == path => tried + 1,
            _ => {
                type_errors.push(FieldError::new(render(prefix, &path), reason));
                0
            }
        };
        let Some(stand_in) = STAND_INS.get(next) else {
            break;
        };
        if !put(&mut json, &path, stand_in()) {
            break;
        }
        filling = Some((path, next));
    }
    Decoded {
        value: None,
        type_errors,
    }
}

/// Where a decode error is, and why. A missing field is reported at the
/// field (serde reports it at the object holding it, as "missing field `x`").
fn locate(
    json: &Value,
    error: &serde_path_to_error::Error<serde_json::Error>,
) -> Option<(Vec<Key>, String)> {
    let mut path = Vec::new();
    for segment in error.path().iter() {
        path.push(match segment {
            Segment::Map { key } => Key::Field(key.clone()),
            Segment::Seq { index } => Key::Index(*index),
            Segment::Enum { .. } | Segment::Unknown => return None,
        });
    }
    let message = error.inner().to_string();
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        path.push(Key::Field(field.to_string()));
        return Some((path, "required".to_string()));
    }
    // `null` is the same as absent: where it fails, the field is required.
    if get(json, &path).is_some_and(Value::is_null) {
        return Some((path, "required".to_string()));
    }
    Some((path, message))
}

fn get<'a>(json: &'a Value, path: &[Key]) -> Option<&'a Value> {
    path.iter().try_fold(json, |value, key| match key {
        Key::Field(name) => value.get(name),
        Key::Index(i) => value.get(i),
    })
}

/// Sets the value at `path` (adding a missing last field); false if the path
/// does not lead into the document.
fn put(json: &mut Value, path: &[Key], value: Value) -> bool {
    let Some((last, parents)) = path.split_last() else {
        *json = value;
        return true;
    };
    let mut at = json;
    for key in parents {
        let next = match key {
            Key::Field(name) => at.get_mut(name),
            Key::Index(i) => at.get_mut(i),
        };
        let Some(next) = next else {
            return false;
        };
        at = next;
    }
    match (last, at) {
        (Key::Field(name), Value::Object(map)) => {
            map.insert(name.clone(), value);
            true
        }
        (Key::Index(i), Value::Array(items)) if *i < items.len() => {
            items[*i] = value;
            true
        }
        _ => false,
    }
}

/// `spec`, `[Field("subjects"), Index(2)]` → `spec.subjects[2]`.
fn render(prefix: &str, path: &[Key]) -> String {
    let mut out = prefix.to_string();
    for key in path {
        match key {
            Key::Field(name) if out.is_empty() => out.push_str(name),
            Key::Field(name) => {
                out.push('.');
                out.push_str(name);
            }
            Key::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "camelCase")]
    struct Thing {
        name: String,
        #[serde(default)]
        tags: Vec<String>,
        count: Option<i64>,
        inner: Option<Inner>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Inner {
        on: Option<bool>,
    }

    fn fields(d: &Decoded<Thing>) -> Vec<(&str, &str)> {
        d.type_errors
            .iter()
            .map(|e| (e.field.as_str(), e.reason.as_str()))
            .collect()
    }

    #[test]
    fn a_well_typed_value_decodes_without_errors() {
        let d: Decoded<Thing> = decode("spec", json!({"name": "a", "tags": ["x"], "count": 2}));
        assert!(d.type_errors.is_empty());
        assert_eq!(d.value.unwrap().tags, ["x"]);
    }

    #[test]
    fn every_type_error_is_reported_at_its_path_and_indices_are_kept() {
        let d: Decoded<Thing> = decode(
            "spec",
            json!({"name": 7, "tags": ["a", 3, "b", false], "count": "2", "inner": {"on": "yes"}}),
        );
        let got: Vec<&str> = fields(&d).iter().map(|(f, _)| *f).collect();
        let mut want = vec![
            "spec.count",
            "spec.inner.on",
            "spec.name",
            "spec.tags[1]",
            "spec.tags[3]",
        ];
        let mut sorted = got.clone();
        sorted.sort();
        want.sort();
        assert_eq!(sorted, want);
        let value = d.value.as_ref().expect("stand-ins of the right type");
        assert_eq!(value.tags.len(), 4, "indices kept");
        assert_eq!(value.tags[2], "b");
        assert!(
            fields(&d).contains(&("spec.name", "invalid type: integer `7`, expected a string"))
        );
    }

    #[test]
    fn a_missing_or_null_required_field_is_required() {
        let d: Decoded<Thing> = decode("spec", json!({}));
        assert_eq!(fields(&d), [("spec.name", "required")]);
        let d: Decoded<Thing> = decode("spec", json!({"name": null}));
        assert_eq!(fields(&d), [("spec.name", "required")]);
    }

    #[test]
    fn paths_render_like_kubernetes_field_paths() {
        let path = [
            Key::Field("a".into()),
            Key::Index(2),
            Key::Field("b".into()),
        ];
        assert_eq!(render("spec", &path), "spec.a[2].b");
        assert_eq!(render("", &path), "a[2].b");
    }
}
