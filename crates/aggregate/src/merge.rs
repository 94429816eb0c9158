//! Shaping and merging of call results: `pick`, `allow`, `deny`, `rename`
//! and the deep merge into the aggregated object. Pure: no I/O, no tower.

use serde_json::{Map, Value};

/// A dotted path into JSON: `data.user`, `items.0.id`. On an array, a
/// numeric segment is an index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FieldPath(Vec<String>);

/// What to keep of a call's response, applied in this order: `pick`, then
/// `allow`, then `deny`, then each `rename` in declaration order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Shape {
    pub(crate) pick: Option<FieldPath>,
    pub(crate) allow: Vec<FieldPath>,
    pub(crate) deny: Vec<FieldPath>,
    pub(crate) rename: Vec<(FieldPath, FieldPath)>,
}

// === impl FieldPath ===

impl FieldPath {
    /// Parses a dotted path; `None` if it is empty or has an empty segment.
    pub(crate) fn parse(s: &str) -> Option<Self> {
        if s.is_empty() {
            return None;
        }
        let segs: Vec<String> = s.split('.').map(str::to_owned).collect();
        if segs.iter().any(String::is_empty) {
            return None;
        }
        Some(Self(segs))
    }

    fn segs(&self) -> &[String] {
        &self.0
    }
}

/// The value at `path` in `v`: object members by key, array elements by
/// index.
pub(crate) fn get<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, seg| match v {
        Value::Object(m) => m.get(seg),
        Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

/// [`get`] with a parsed path.
pub(crate) fn get_path<'a>(v: &'a Value, path: &FieldPath) -> Option<&'a Value> {
    get(v, path.segs())
}

// === impl Shape ===

impl Shape {
    /// Whether the shape leaves a value as it is.
    pub(crate) fn is_identity(&self) -> bool {
        self.pick.is_none()
            && self.allow.is_empty()
            && self.deny.is_empty()
            && self.rename.is_empty()
    }

    /// Shapes a call's response. A `pick` path that does not exist gives
    /// `null`. `allow`, `deny` and `rename` apply to an object, or to every
    /// object element of an array; other values pass unchanged.
    pub(crate) fn apply(&self, v: Value) -> Value {
        if self.is_identity() {
            return v;
        }
        let mut v = match &self.pick {
            Some(p) => get_path(&v, p).cloned().unwrap_or(Value::Null),
            None => v,
        };
        if !self.allow.is_empty() {
            let paths: Vec<&[String]> = self.allow.iter().map(FieldPath::segs).collect();
            v = allow(v, &paths);
        }
        for d in &self.deny {
            deny(&mut v, d.segs());
        }
        for (from, to) in &self.rename {
            rename(&mut v, from.segs(), to.segs());
        }
        v
    }
}

/// Keeps only `paths` (each non-empty). Arrays: applied to every element.
/// A path that goes through a scalar keeps nothing of it.
fn allow(v: Value, paths: &[&[String]]) -> Value {
    match v {
        Value::Array(a) => Value::Array(
            a.into_iter()
                .map(|e| match e {
                    Value::Object(_) | Value::Array(_) => allow(e, paths),
                    other => other,
                })
                .collect(),
        ),
        Value::Object(mut m) => {
            let mut out = Map::new();
            for (i, p) in paths.iter().enumerate() {
                let Some((key, _)) = p.split_first() else {
                    continue;
                };
                // Handle each key once, with all the paths that start with it.
                if paths[..i].iter().any(|q| q.first() == Some(key)) {
                    continue;
                }
                let Some(child) = m.remove(key) else {
                    continue;
                };
                let whole = paths.iter().any(|q| q.len() == 1 && q[0] == *key);
                if whole {
                    out.insert(key.clone(), child);
                    continue;
                }
                if !matches!(child, Value::Object(_) | Value::Array(_)) {
                    continue;
                }
                let rests: Vec<&[String]> = paths
                    .iter()
                    .filter(|q| q.first() == Some(key))
                    .map(|q| &q[1..])
                    .collect();
                out.insert(key.clone(), allow(child, &rests));
            }
            Value::Object(out)
        }
        other => other,
    }
}

/// Removes `path` (non-empty). Arrays: applied to every element.
fn deny(v: &mut Value, path: &[String]) {
    match v {
        Value::Array(a) => a.iter_mut().for_each(|e| deny(e, path)),
        Value::Object(m) => match path {
            [] => {}
            [last] => {
                m.remove(last);
            }
            [first, rest @ ..] => {
                if let Some(child) = m.get_mut(first) {
                    deny(child, rest);
                }
            }
        },
        _ => {}
    }
}

/// Moves the value at `from` to `to` (both object paths). Arrays: applied to
/// every element. Intermediate objects of `to` are created; nothing happens
/// when `from` is absent.
fn rename(v: &mut Value, from: &[String], to: &[String]) {
    match v {
        Value::Array(a) => a.iter_mut().for_each(|e| rename(e, from, to)),
        Value::Object(m) => {
            if let Some(x) = take(m, from) {
                put(m, to, x);
            }
        }
        _ => {}
    }
}

fn take(m: &mut Map<String, Value>, path: &[String]) -> Option<Value> {
    match path {
        [] => None,
        [last] => m.remove(last),
        [first, rest @ ..] => match m.get_mut(first) {
            Some(Value::Object(child)) => take(child, rest),
            _ => None,
        },
    }
}

fn put(m: &mut Map<String, Value>, path: &[String], x: Value) {
    match path {
        [] => {}
        [last] => {
            m.insert(last.clone(), x);
        }
        [first, rest @ ..] => {
            let child = m
                .entry(first.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            if !child.is_object() {
                *child = Value::Object(Map::new());
            }
            if let Value::Object(c) = child {
                put(c, rest, x);
            }
        }
    }
}

/// Merges `from` into `into`: objects merge recursively; for anything else
/// the value from `from` (the later call) wins.
pub(crate) fn deep_merge(into: &mut Map<String, Value>, from: Map<String, Value>) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(Value::Object(a)), Value::Object(b)) => deep_merge(a, b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

/// Puts one call's result into the aggregated object. `value` is `None`
/// when the call is missing: a grouped call then leaves `null` under its
/// group, a top-level one leaves nothing. A top-level value that is not an
/// object goes under `group`.
pub(crate) fn place(
    out: &mut Map<String, Value>,
    group: &str,
    top_level: bool,
    value: Option<Value>,
) {
    match (value, top_level) {
        (Some(Value::Object(m)), true) => deep_merge(out, m),
        (Some(v), _) => {
            out.insert(group.to_owned(), v);
        }
        (None, false) => {
            out.insert(group.to_owned(), Value::Null);
        }
        (None, true) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(s: &str) -> FieldPath {
        FieldPath::parse(s).unwrap()
    }

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn paths() {
        assert!(FieldPath::parse("").is_none());
        assert!(FieldPath::parse("a..b").is_none());
        assert!(FieldPath::parse(".a").is_none());
        let v = json!({"items": [{"id": 1}, {"id": 2}], "data": {"user": {"n": "x"}}});
        assert_eq!(get_path(&v, &p("items.1.id")), Some(&json!(2)));
        assert_eq!(get_path(&v, &p("data.user.n")), Some(&json!("x")));
        assert_eq!(get_path(&v, &p("items.x")), None);
        assert_eq!(get_path(&v, &p("items.9")), None);
        assert_eq!(get_path(&v, &p("data.user.n.deeper")), None);
    }

    #[test]
    fn pick() {
        let v = json!({"data": {"user": {"id": 1}}, "items": [{"a": 1}, {"a": 2}]});
        let shape = Shape {
            pick: Some(p("data.user")),
            ..Shape::default()
        };
        assert_eq!(shape.apply(v.clone()), json!({"id": 1}));
        let shape = Shape {
            pick: Some(p("items.0")),
            ..Shape::default()
        };
        assert_eq!(shape.apply(v.clone()), json!({"a": 1}));
        let shape = Shape {
            pick: Some(p("nope")),
            ..Shape::default()
        };
        assert_eq!(shape.apply(v), Value::Null);
    }

    #[test]
    fn allow_on_objects_and_nested_paths() {
        let v = json!({"id": 1, "name": "a", "secret": "s", "address": {"city": "X", "zip": "1"}, "n": 5});
        let shape = Shape {
            allow: vec![p("id"), p("address.city"), p("n.x"), p("absent")],
            ..Shape::default()
        };
        assert_eq!(shape.apply(v), json!({"id": 1, "address": {"city": "X"}}));
    }

    #[test]
    fn allow_whole_beats_sub_path() {
        let v = json!({"a": {"b": 1, "c": 2}});
        let shape = Shape {
            allow: vec![p("a.b"), p("a")],
            ..Shape::default()
        };
        assert_eq!(shape.apply(v), json!({"a": {"b": 1, "c": 2}}));
    }

    #[test]
    fn allow_on_arrays() {
        let v = json!([{"id": 1, "x": 1, "tags": [{"k": 1, "v": 2}]}, {"id": 2, "x": 2}, 7]);
        let shape = Shape {
            allow: vec![p("id"), p("tags.k")],
            ..Shape::default()
        };
        assert_eq!(
            shape.apply(v),
            json!([{"id": 1, "tags": [{"k": 1}]}, {"id": 2}, 7])
        );
    }

    #[test]
    fn deny_on_objects_and_arrays() {
        let v = json!({"id": 1, "secret": "s", "address": {"city": "X", "zip": "1"}});
        let shape = Shape {
            deny: vec![p("secret"), p("address.zip"), p("nope.x")],
            ..Shape::default()
        };
        assert_eq!(shape.apply(v), json!({"id": 1, "address": {"city": "X"}}));
        let v = json!([{"id": 1, "secret": 1}, {"id": 2}, "s"]);
        let shape = Shape {
            deny: vec![p("secret")],
            ..Shape::default()
        };
        assert_eq!(shape.apply(v), json!([{"id": 1}, {"id": 2}, "s"]));
    }

    #[test]
    fn rename_on_objects_and_arrays() {
        let v = json!({"id": 1, "name": "a", "address": {"city": "X"}});
        let shape = Shape {
            rename: vec![
                (p("id"), p("user_id")),
                (p("address.city"), p("city")),
                (p("name"), p("meta.name")),
                (p("absent"), p("x")),
            ],
            ..Shape::default()
        };
        assert_eq!(
            shape.apply(v),
            json!({"user_id": 1, "address": {}, "city": "X", "meta": {"name": "a"}})
        );
        let v = json!([{"id": 1}, {"id": 2}, {"other": 3}]);
        let shape = Shape {
            rename: vec![(p("id"), p("order_id"))],
            ..Shape::default()
        };
        assert_eq!(
            shape.apply(v),
            json!([{"order_id": 1}, {"order_id": 2}, {"other": 3}])
        );
    }

    #[test]
    fn order_is_pick_allow_deny_rename() {
        let v = json!({"data": {"id": 1, "name": "a", "secret": "s", "x": 0}});
        let shape = Shape {
            pick: Some(p("data")),
            allow: vec![p("id"), p("name"), p("secret")],
            deny: vec![p("secret")],
            rename: vec![(p("name"), p("display_name"))],
        };
        assert_eq!(shape.apply(v), json!({"id": 1, "display_name": "a"}));
    }

    #[test]
    fn deep_merge_later_wins_for_non_objects() {
        let mut out = obj(json!({"a": {"x": 1, "y": {"p": 1}}, "b": 1, "c": {"k": 1}}));
        deep_merge(
            &mut out,
            obj(json!({"a": {"y": {"q": 2}, "z": 3}, "b": {"now": "object"}, "c": 5, "d": [1]})),
        );
        assert_eq!(
            Value::Object(out),
            json!({"a": {"x": 1, "y": {"p": 1, "q": 2}, "z": 3}, "b": {"now": "object"}, "c": 5, "d": [1]})
        );
    }

    #[test]
    fn placement() {
        let mut out = Map::new();
        place(&mut out, "user", false, Some(json!({"id": 1})));
        place(
            &mut out,
            "profile",
            true,
            Some(json!({"name": "a", "user": {"extra": true}})),
        );
        place(&mut out, "tags", true, Some(json!(["x"])));
        place(&mut out, "orders", false, None);
        place(&mut out, "flags", true, None);
        assert_eq!(
            Value::Object(out),
            json!({"user": {"id": 1, "extra": true}, "name": "a", "tags": ["x"], "orders": null})
        );
    }
}
