//! "Is what the cache holds already what we want?" — the question that makes
//! a reconcile of a LearnerSpace in its wanted state cost no write.
//!
//! `contains(actual, desired)`: every field we set is there with our value.
//! Fields the API server or others add (defaults, status, uid, other
//! managers' labels) do not count. Quantities compare by value: the API
//! server stores `0.5` as `500m`.

use serde_json::Value;

use crate::quantity::Quantity;

pub fn contains(actual: &Value, desired: &Value) -> bool {
    match (actual, desired) {
        (_, Value::Null) => true,
        (Value::Object(a), Value::Object(d)) => d.iter().all(|(key, want)| match a.get(key) {
            Some(have) => contains(have, want),
            None => want.is_null(),
        }),
        (Value::Array(a), Value::Array(d)) => {
            a.len() == d.len() && a.iter().zip(d).all(|(have, want)| contains(have, want))
        }
        (Value::String(a), Value::String(d)) => a == d || same_quantity(a, d),
        (a, d) => a == d,
    }
}

fn same_quantity(a: &str, b: &str) -> bool {
    matches!((Quantity::parse(a), Quantity::parse(b)), (Ok(x), Ok(y)) if x == y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn extra_fields_do_not_count() {
        let actual = json!({"metadata": {"name": "a", "uid": "1", "labels": {"x": "1", "y": "2"}}, "status": {}});
        assert!(contains(
            &actual,
            &json!({"metadata": {"name": "a", "labels": {"x": "1"}}})
        ));
        assert!(!contains(
            &actual,
            &json!({"metadata": {"labels": {"x": "2"}}})
        ));
        assert!(!contains(
            &actual,
            &json!({"metadata": {"labels": {"z": "1"}}})
        ));
    }

    #[test]
    fn lists_must_match_in_length_and_order() {
        let actual = json!({"rules": [{"verbs": ["get"], "apiGroups": [""]}]});
        assert!(contains(&actual, &json!({"rules": [{"verbs": ["get"]}]})));
        assert!(!contains(
            &actual,
            &json!({"rules": [{"verbs": ["get", "list"]}]})
        ));
        assert!(!contains(&actual, &json!({"rules": []})));
    }

    #[test]
    fn quantities_compare_by_value() {
        assert!(contains(&json!({"cpu": "500m"}), &json!({"cpu": "0.5"})));
        assert!(contains(
            &json!({"memory": "4Gi"}),
            &json!({"memory": "4096Mi"})
        ));
        assert!(!contains(
            &json!({"memory": "4Gi"}),
            &json!({"memory": "4G"})
        ));
        assert!(!contains(&json!({"name": "a"}), &json!({"name": "b"})));
    }

    #[test]
    fn null_means_we_do_not_care() {
        assert!(contains(&json!({}), &json!({"spec": null})));
        assert!(!contains(&json!({}), &json!({"spec": {}})));
    }
}
