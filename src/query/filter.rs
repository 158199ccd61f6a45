//! Kubecost's v2 filter language for allocations:
//! `namespace:"a","b" + label[app]!:"web"`, `(node:"n1" | cluster:"c2")`.
//! `+` is AND, `|` is OR; mixing them at one level needs parentheses.

use crate::model::AllocationProperties;

/// A parsed filter.
#[derive(Clone, Debug, PartialEq)]
pub enum Filter {
    /// Every clause holds.
    And(Vec<Filter>),
    /// Some clause holds.
    Or(Vec<Filter>),
    /// One comparison.
    Cmp(Comparison),
}

/// `field[key] op values`.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    /// The field compared.
    pub field: Field,
    /// How.
    pub op: Op,
    /// Any of these (lower case for `controllerKind`, which compares without case).
    pub values: Vec<String>,
    /// For `:` and `!:` with many values, the same values hashed: a long filter costs one
    /// lookup per row, not one comparison per value.
    lookup: Option<std::collections::HashSet<String>>,
}

/// From how many values an equality builds a hash set.
const LOOKUP_FROM: usize = 8;

/// A filterable allocation field.
#[derive(Clone, Debug, PartialEq)]
pub enum Field {
    /// `cluster`: the cluster id.
    Cluster,
    /// `node`: the node name.
    Node,
    /// `namespace`.
    Namespace,
    /// `controllerName`: the controller's name.
    ControllerName,
    /// `controllerKind`, compared without case.
    ControllerKind,
    /// `container`: the container name.
    Container,
    /// `pod`: the pod name.
    Pod,
    /// `services`: matches when any of the pod's services does (none, for a negated operator).
    Services,
    /// `label[key]` (and the aliases `department`, `environment`, `owner`, `product`, `team`):
    /// the value of the label with this sanitised key, empty when absent.
    Label(String),
    /// `annotation[key]`: the value of the annotation with this sanitised key, empty when
    /// absent.
    Annotation(String),
}

impl Field {
    /// Whether the field applies to an idle allocation (which has only cluster and node).
    pub fn applies_to_idle(&self) -> bool {
        matches!(self, Field::Cluster | Field::Node)
    }
}

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `:` equals one of the values.
    Eq,
    /// `!:` equals none of the values.
    Neq,
    /// `~:` contains one of the values.
    Contains,
    /// `!~:` contains none of the values.
    NotContains,
    /// `<~:` starts with one of the values.
    Prefix,
    /// `!<~:` starts with none of the values.
    NotPrefix,
    /// `~>:` ends with one of the values.
    Suffix,
    /// `!~>:` ends with none of the values.
    NotSuffix,
}

impl Op {
    fn negated(self) -> bool {
        matches!(
            self,
            Op::Neq | Op::NotContains | Op::NotPrefix | Op::NotSuffix
        )
    }
    fn test(self, have: &str, want: &str) -> bool {
        match self {
            Op::Eq | Op::Neq => have == want,
            Op::Contains | Op::NotContains => have.contains(want),
            Op::Prefix | Op::NotPrefix => have.starts_with(want),
            Op::Suffix | Op::NotSuffix => have.ends_with(want),
        }
    }
}

impl Filter {
    /// Whether the allocation with these properties passes.
    pub fn matches(&self, p: &AllocationProperties) -> bool {
        match self {
            Filter::And(fs) => fs.iter().all(|f| f.matches(p)),
            Filter::Or(fs) => fs.iter().any(|f| f.matches(p)),
            Filter::Cmp(c) => c.matches(p),
        }
    }

    /// About how many string comparisons testing one row takes: what a filter adds to a
    /// query's cost (a hashed list is one lookup; other lists compare every value).
    pub fn comparisons(&self) -> u64 {
        match self {
            Filter::And(fs) | Filter::Or(fs) => fs.iter().map(Filter::comparisons).sum(),
            Filter::Cmp(c) if c.lookup.is_some() => 1,
            Filter::Cmp(c) => c.values.len() as u64,
        }
    }

    /// Whether an idle allocation on this cluster and node passes: clauses on other fields
    /// cannot be judged on idle and count as passed (idle is scaled by what they kept instead).
    pub fn matches_idle(&self, p: &AllocationProperties) -> bool {
        match self {
            Filter::And(fs) => fs.iter().all(|f| f.matches_idle(p)),
            Filter::Or(fs) => fs.iter().any(|f| f.matches_idle(p)),
            Filter::Cmp(c) if c.field.applies_to_idle() => c.matches(p),
            Filter::Cmp(_) => true,
        }
    }
}

impl Comparison {
    fn new(field: Field, op: Op, mut values: Vec<String>) -> Self {
        if field == Field::ControllerKind {
            for v in &mut values {
                v.make_ascii_lowercase();
            }
        }
        let lookup = (matches!(op, Op::Eq | Op::Neq) && values.len() >= LOOKUP_FROM)
            .then(|| values.iter().cloned().collect());
        Self {
            field,
            op,
            values,
            lookup,
        }
    }

    /// Whether `have` matches any value.
    fn any(&self, have: &str) -> bool {
        match &self.lookup {
            Some(set) => set.contains(have),
            None => self.values.iter().any(|v| self.op.test(have, v)),
        }
    }

    fn matches(&self, p: &AllocationProperties) -> bool {
        let one = |have: &str| {
            let any = if self.field == Field::ControllerKind {
                self.any(&have.to_ascii_lowercase())
            } else {
                self.any(have)
            };
            if self.op.negated() { !any } else { any }
        };
        match &self.field {
            Field::Cluster => one(&p.cluster),
            Field::Node => one(&p.node),
            Field::Namespace => one(&p.namespace),
            Field::ControllerName => one(&p.controller),
            Field::ControllerKind => one(&p.controller_kind),
            Field::Container => one(&p.container),
            Field::Pod => one(&p.pod),
            Field::Label(k) => one(p.labels.get(k).map_or("", String::as_str)),
            Field::Annotation(k) => one(p.annotations.get(k).map_or("", String::as_str)),
            Field::Services => {
                let any = p.services.iter().any(|s| self.any(s));
                if self.op.negated() { !any } else { any }
            }
        }
    }
}

/// Longest filter accepted.
const MAX_FILTER_BYTES: usize = 16 * 1024;
/// Deepest nesting of parentheses accepted: the parser recurses once per level.
const MAX_DEPTH: usize = 32;

/// Parses a filter; the error names the position and what was expected.
pub fn parse(text: &str) -> Result<Filter, String> {
    if text.len() > MAX_FILTER_BYTES {
        return Err(format!(
            "filter is {} bytes long; at most {MAX_FILTER_BYTES} are accepted",
            text.len()
        ));
    }
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
        text,
        depth: 0,
    };
    let f = p.expr()?;
    p.ws();
    if p.i < p.s.len() {
        return Err(p.err("end of filter or + or |"));
    }
    Ok(f)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    text: &'a str,
    depth: usize,
}

impl Parser<'_> {
    fn err(&self, expected: &str) -> String {
        let found = self
            .text
            .get(self.i..)
            .and_then(|r| r.chars().next())
            .map_or("end of input".to_string(), |c| format!("{c:?}"));
        format!(
            "filter {:?}: expected {expected} at position {}, found {found}",
            self.text, self.i
        )
    }
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }
    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.i).copied()
    }

    fn expr(&mut self) -> Result<Filter, String> {
        let first = self.term()?;
        let mut terms = vec![first];
        let mut joiner: Option<u8> = None;
        while let Some(c @ (b'+' | b'|')) = self.peek() {
            if joiner.is_some_and(|j| j != c) {
                return Err(format!(
                    "filter {:?}: mixing + and | at position {} needs parentheses",
                    self.text, self.i
                ));
            }
            joiner = Some(c);
            self.i += 1;
            terms.push(self.term()?);
        }
        Ok(match (joiner, terms.len()) {
            (_, 1) => terms.pop().expect("one term"),
            (Some(b'|'), _) => Filter::Or(terms),
            _ => Filter::And(terms),
        })
    }

    fn term(&mut self) -> Result<Filter, String> {
        if self.peek() == Some(b'(') {
            self.depth += 1;
            if self.depth > MAX_DEPTH {
                return Err(format!(
                    "filter {:?}: parentheses nest deeper than {MAX_DEPTH} levels",
                    self.text
                ));
            }
            self.i += 1;
            let f = self.expr()?;
            self.depth -= 1;
            if self.peek() != Some(b')') {
                return Err(self.err("')'"));
            }
            self.i += 1;
            return Ok(f);
        }
        self.comparison().map(Filter::Cmp)
    }

    fn ident(&mut self) -> &str {
        self.ws();
        let start = self.i;
        while self.i < self.s.len()
            && (self.s[self.i].is_ascii_alphanumeric() || self.s[self.i] == b'_')
        {
            self.i += 1;
        }
        &self.text[start..self.i]
    }

    fn comparison(&mut self) -> Result<Comparison, String> {
        let at = self.i;
        let name = self.ident().to_string();
        if name.is_empty() {
            return Err(self.err("a field name such as namespace"));
        }
        let key = if self.s.get(self.i) == Some(&b'[') {
            self.i += 1;
            let start = self.i;
            while self.i < self.s.len() && self.s[self.i] != b']' {
                self.i += 1;
            }
            if self.i >= self.s.len() {
                return Err(self.err("']'"));
            }
            let k = self.text[start..self.i]
                .trim()
                .trim_matches('"')
                .trim()
                .to_string();
            if k.is_empty() {
                return Err(format!(
                    "filter {:?}: {name}[] at position {at} needs a key, as in {name}[app]",
                    self.text
                ));
            }
            self.i += 1;
            Some(k)
        } else {
            None
        };
        let label = |k: &str| Field::Label(k.to_string());
        let field = match (name.as_str(), key) {
            ("cluster", None) => Field::Cluster,
            ("node", None) => Field::Node,
            ("namespace", None) => Field::Namespace,
            ("controllerName", None) => Field::ControllerName,
            ("controllerKind", None) => Field::ControllerKind,
            ("container", None) => Field::Container,
            ("pod", None) => Field::Pod,
            ("services", None) => Field::Services,
            ("label", Some(k)) => Field::Label(sanitize(&k)),
            ("annotation", Some(k)) => Field::Annotation(sanitize(&k)),
            ("department", None) => label("department"),
            ("environment", None) => label("env"),
            ("owner", None) => label("owner"),
            ("product", None) => label("app"),
            ("team", None) => label("team"),
            ("label" | "annotation", None) => {
                return Err(format!(
                    "filter {:?}: {name} at position {at} needs a key, as in {name}[app]",
                    self.text
                ));
            }
            _ => {
                return Err(format!(
                    "filter {:?}: unknown field {name:?} at position {at}; expected cluster, node, namespace, controllerName, controllerKind, container, pod, services, label[..], annotation[..], department, environment, owner, product or team",
                    self.text
                ));
            }
        };
        self.ws();
        let ops: [(&str, Op); 8] = [
            ("!~>:", Op::NotSuffix),
            ("!<~:", Op::NotPrefix),
            ("!~:", Op::NotContains),
            ("~>:", Op::Suffix),
            ("<~:", Op::Prefix),
            ("!:", Op::Neq),
            ("~:", Op::Contains),
            (":", Op::Eq),
        ];
        let rest = &self.text[self.i..];
        let Some((tok, op)) = ops.iter().find(|(t, _)| rest.starts_with(t)) else {
            return Err(self.err("an operator (:, !:, ~:, !~:, <~:, !<~:, ~>:, !~>:)"));
        };
        self.i += tok.len();
        let mut values = vec![self.value()?];
        while self.peek() == Some(b',') {
            self.i += 1;
            values.push(self.value()?);
        }
        Ok(Comparison::new(field, *op, values))
    }

    fn value(&mut self) -> Result<String, String> {
        self.ws();
        if self.s.get(self.i) == Some(&b'"') {
            self.i += 1;
            let mut out = String::new();
            let mut chars = self.text[self.i..].char_indices();
            while let Some((off, c)) = chars.next() {
                match c {
                    '"' => {
                        self.i += off + 1;
                        return Ok(out);
                    }
                    '\\' => match chars.next() {
                        Some((_, e)) => out.push(e),
                        None => break,
                    },
                    c => out.push(c),
                }
            }
            self.i = self.s.len();
            return Err(self.err("a closing '\"'"));
        }
        // Values are double-quoted, as in OpenCost's filter language: an unquoted or
        // single-quoted value would silently match nothing.
        if self.s.get(self.i) == Some(&b'\'') {
            return Err(self.err(
                "a double-quoted value such as \"kube-system\" (single quotes are not accepted)",
            ));
        }
        Err(self.err("a double-quoted value such as \"kube-system\""))
    }
}

/// Prometheus label-name sanitising, as OpenCost applies to label keys.
pub fn sanitize(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(ns: &str, app: &str) -> AllocationProperties {
        AllocationProperties {
            namespace: ns.into(),
            cluster: "c1".into(),
            node: "n1".into(),
            controller_kind: "deployment".into(),
            labels: [("app".to_string(), app.to_string())].into(),
            ..Default::default()
        }
    }

    #[test]
    fn equality_lists_and_negation() {
        let f = parse(r#"namespace:"a","b""#).unwrap();
        assert!(
            f.matches(&props("a", "")) && f.matches(&props("b", "")) && !f.matches(&props("c", ""))
        );
        let f = parse(r#"namespace!:"a","b""#).unwrap();
        assert!(!f.matches(&props("a", "")) && f.matches(&props("c", "")));
    }

    #[test]
    fn and_or_and_parentheses() {
        let f = parse(r#"namespace:"a" + label[app]:"web""#).unwrap();
        assert!(f.matches(&props("a", "web")) && !f.matches(&props("a", "db")));
        let f = parse(r#"namespace:"a" | label[app]:"web""#).unwrap();
        assert!(f.matches(&props("b", "web")) && !f.matches(&props("b", "db")));
        let f = parse(r#"(namespace:"a" | namespace:"b") + label[app]!:"db""#).unwrap();
        assert!(f.matches(&props("b", "web")) && !f.matches(&props("b", "db")));
        assert!(
            parse(r#"namespace:"a" | namespace:"b" + pod:"x""#)
                .unwrap_err()
                .contains("parentheses")
        );
    }

    #[test]
    fn string_operators_and_kind_case() {
        assert!(
            parse(r#"namespace~:"ron""#)
                .unwrap()
                .matches(&props("frontend", ""))
        );
        assert!(
            parse(r#"namespace<~:"front""#)
                .unwrap()
                .matches(&props("frontend", ""))
        );
        assert!(
            parse(r#"namespace~>:"end""#)
                .unwrap()
                .matches(&props("frontend", ""))
        );
        assert!(
            !parse(r#"namespace!~:"ron""#)
                .unwrap()
                .matches(&props("frontend", ""))
        );
        assert!(
            parse(r#"controllerKind:"Deployment""#)
                .unwrap()
                .matches(&props("a", ""))
        );
    }

    #[test]
    fn long_value_lists_match_as_short_ones_do() {
        let many: Vec<String> = (0..50).map(|i| format!("\"ns{i}\"")).collect();
        let f = parse(&format!("namespace:{}", many.join(","))).unwrap();
        let Filter::Cmp(c) = &f else { panic!() };
        assert!(c.lookup.is_some(), "hashed");
        assert!(f.matches(&props("ns7", "")) && !f.matches(&props("ns50", "")));
        let f = parse(&format!("namespace!:{}", many.join(","))).unwrap();
        assert!(!f.matches(&props("ns7", "")) && f.matches(&props("other", "")));
        let kinds: Vec<String> = (0..10).map(|i| format!("\"Kind{i}\"")).collect();
        let f = parse(&format!(
            "controllerKind:\"DEPLOYMENT\",{}",
            kinds.join(",")
        ))
        .unwrap();
        assert!(f.matches(&props("a", "")), "kinds compare without case");
    }

    #[test]
    fn errors_name_the_problem() {
        assert!(
            parse(r#"nmespace:"a""#)
                .unwrap_err()
                .contains("unknown field \"nmespace\"")
        );
        assert!(parse(r#"namespace="a""#).unwrap_err().contains("operator"));
        assert!(parse(r#"namespace:"a"#).unwrap_err().contains("closing"));
        assert!(parse(r#"label:"a""#).unwrap_err().contains("needs a key"));
        assert!(parse(r#"label[]:"a""#).unwrap_err().contains("needs a key"));
        assert!(
            parse(r#"label[ "" ]:"a""#)
                .unwrap_err()
                .contains("needs a key")
        );
        assert!(
            parse("namespace:'a'")
                .unwrap_err()
                .contains("single quotes")
        );
        assert!(parse("namespace:a").unwrap_err().contains("double-quoted"));
        assert!(parse("").unwrap_err().contains("field name"));
        let deep = format!("{}namespace:\"a\"{}", "(".repeat(1_000), ")".repeat(1_000));
        assert!(parse(&deep).unwrap_err().contains("nest deeper"));
        let ok = format!(
            "{}namespace:\"a\"{}",
            "(".repeat(MAX_DEPTH),
            ")".repeat(MAX_DEPTH)
        );
        assert!(parse(&ok).is_ok());
    }
}
