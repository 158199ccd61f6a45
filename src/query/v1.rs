//! Kubecost's older filter parameters (`filterNamespaces=kube-system,kubecost`, ...), read only
//! when `filter` is absent. Each is translated into the v2 filter language and parsed by the
//! same parser, so the two cannot disagree: values of one parameter are alternatives (OR), a
//! value ending in `*` matches by prefix, and different parameters must all hold (AND).

use std::collections::HashMap;
use std::fmt::Write as _;

/// The v1 parameters and the v2 field each one filters on. Labels and annotations take
/// `key:value` items.
const PARAMS: [(&str, V1Field); 10] = [
    ("filterClusters", V1Field::Plain("cluster")),
    ("filterNodes", V1Field::Plain("node")),
    ("filterNamespaces", V1Field::Plain("namespace")),
    ("filterControllerKinds", V1Field::Plain("controllerKind")),
    ("filterControllers", V1Field::Controller),
    ("filterPods", V1Field::Plain("pod")),
    ("filterContainers", V1Field::Plain("container")),
    ("filterServices", V1Field::Plain("services")),
    ("filterLabels", V1Field::Keyed("label")),
    ("filterAnnotations", V1Field::Keyed("annotation")),
];

#[derive(Clone, Copy)]
enum V1Field {
    /// A field compared with each value.
    Plain(&'static str),
    /// `kind:name` or a bare name.
    Controller,
    /// `key:value` items on a map field.
    Keyed(&'static str),
}

/// A value as a quoted v2 literal.
fn quoted(v: &str) -> String {
    let mut s = String::with_capacity(v.len() + 2);
    s.push('"');
    for c in v.chars() {
        if c == '"' || c == '\\' {
            s.push('\\');
        }
        s.push(c);
    }
    s.push('"');
    s
}

/// `field:"v"`, or `field<~:"v"` for a value ending in `*`.
fn comparison(field: &str, value: &str) -> String {
    match value.strip_suffix('*') {
        Some(prefix) => format!("{field}<~:{}", quoted(prefix)),
        None => format!("{field}:{}", quoted(value)),
    }
}

/// The v2 filter text equivalent to the v1 parameters present, or `None` when there are none.
/// An error names the parameter and the item it could not read.
pub(crate) fn to_v2(
    params: &HashMap<String, String>,
) -> Result<Option<String>, (&'static str, String)> {
    let mut clauses = Vec::new();
    for (param, field) in PARAMS {
        let Some(list) = params.get(param) else {
            continue;
        };
        let mut alternatives = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let text = match field {
                V1Field::Plain(f) => comparison(f, item),
                V1Field::Controller => match item.split_once(':') {
                    Some((kind, name)) => format!(
                        "({} + {})",
                        comparison("controllerKind", kind.trim()),
                        comparison("controllerName", name.trim())
                    ),
                    None => comparison("controllerName", item),
                },
                V1Field::Keyed(f) => {
                    let Some((k, v)) = item.split_once(':') else {
                        return Err((param, format!("{item:?} is not key:value, as in app:web")));
                    };
                    let k = k.trim();
                    if k.is_empty() || k.contains([']', '"']) {
                        return Err((param, format!("{item:?} has no usable key")));
                    }
                    comparison(&format!("{f}[{k}]"), v.trim())
                }
            };
            alternatives.push(text);
        }
        match alternatives.len() {
            0 => {}
            1 => clauses.push(alternatives.remove(0)),
            _ => clauses.push(format!("({})", alternatives.join(" | "))),
        }
    }
    if clauses.is_empty() {
        return Ok(None);
    }
    let mut out = String::new();
    for (i, c) in clauses.iter().enumerate() {
        if i > 0 {
            out.push_str(" + ");
        }
        let _ = write!(out, "{c}");
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AllocationProperties;
    use crate::query::filter;

    fn v2(q: &[(&str, &str)]) -> Option<String> {
        let params = q
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        to_v2(&params).unwrap()
    }

    fn props(ns: &str, kind: &str, ctrl: &str, app: &str) -> AllocationProperties {
        AllocationProperties {
            namespace: ns.into(),
            controller_kind: kind.into(),
            controller: ctrl.into(),
            labels: [("app".to_string(), app.to_string())].into(),
            ..AllocationProperties::default()
        }
    }

    #[test]
    fn values_are_alternatives_and_parameters_all_hold() {
        let text = v2(&[
            ("filterNamespaces", "kube-system, kube*"),
            ("filterLabels", "app:web"),
        ])
        .unwrap();
        let f = filter::parse(&text).unwrap();
        assert!(f.matches(&props("kube-public", "deployment", "x", "web")));
        assert!(f.matches(&props("kube-system", "deployment", "x", "web")));
        assert!(!f.matches(&props("default", "deployment", "x", "web")));
        assert!(!f.matches(&props("kube-system", "deployment", "x", "db")));
    }

    #[test]
    fn controllers_take_kind_and_name_or_a_name() {
        let f =
            filter::parse(&v2(&[("filterControllers", "deployment:api,worker")]).unwrap()).unwrap();
        assert!(f.matches(&props("a", "deployment", "api", "")));
        assert!(!f.matches(&props("a", "statefulset", "api", "")));
        assert!(f.matches(&props("a", "job", "worker", "")));
    }

    #[test]
    fn quotes_in_values_stay_data() {
        let f = filter::parse(&v2(&[("filterNamespaces", r#"we"ird\ns"#)]).unwrap()).unwrap();
        assert!(f.matches(&props(r#"we"ird\ns"#, "", "", "")));
    }

    #[test]
    fn absent_or_empty_parameters_filter_nothing_and_bad_items_are_named() {
        assert_eq!(v2(&[("filterNamespaces", " , ")]), None);
        assert_eq!(v2(&[]), None);
        let params = [("filterLabels".to_string(), "app".to_string())].into();
        let (param, msg) = to_v2(&params).unwrap_err();
        assert_eq!(param, "filterLabels");
        assert!(msg.contains("key:value"), "{msg}");
    }
}
