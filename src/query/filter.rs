//! Kubecost's v2 filter language, for allocations and for assets:
//! `namespace:"a","b" + label[app]!:"web"`, `(node:"n1" | cluster:"c2")`,
//! `assetType:"Node" + cluster!:"c2"`.
//! `+` is AND, `|` is OR; mixing them at one level needs parentheses.
//!
//! One parser serves both targets: the grammar is shared and each target brings its table of
//! fields ([`FilterField`]: [`Field`] for allocations, [`AssetField`] for assets) and says how
//! a row reads each field ([`Row`]). A field of the other target is refused by name.

use crate::model::{AllocationProperties, Asset, Props};

/// A parsed filter over fields `F` (allocation fields unless said otherwise).
#[derive(Clone, Debug, PartialEq)]
pub enum Filter<F = Field> {
    /// Every clause holds.
    And(Vec<Filter<F>>),
    /// Some clause holds.
    Or(Vec<Filter<F>>),
    /// One comparison.
    Cmp(Comparison<F>),
}

/// `field[key] op values`.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison<F = Field> {
    /// The field compared.
    pub field: F,
    /// How.
    pub op: Op,
    /// Any of these (lower case for fields compared without case: `controllerKind`,
    /// `assetType`).
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

/// A filterable asset field (OpenCost's asset filter fields).
#[derive(Clone, Debug, PartialEq)]
pub enum AssetField {
    /// `name`: the asset's name.
    Name,
    /// `assetType`: the asset's `type` (`Node`, `Disk`, `LoadBalancer`), compared without
    /// case as `controllerKind` is (OpenCost compares the lower-cased type).
    Type,
    /// `category`: `Compute`, `Storage`, `Network`.
    Category,
    /// `cluster`: the cluster id.
    Cluster,
    /// `project`: this build records none, so it reads as empty.
    Project,
    /// `provider`.
    Provider,
    /// `providerID`.
    ProviderId,
    /// `account`: this build records none, so it reads as empty.
    Account,
    /// `service`: the billing service, `Kubernetes` for cluster assets.
    Service,
    /// `label[key]`: the value of the asset label with this sanitised key, empty when absent.
    Label(String),
}

/// What looking a field name up in a target's table found.
pub enum Lookup<F> {
    /// The field.
    Field(F),
    /// A map field named without its `[key]`.
    NeedsKey,
    /// No such field for this target.
    Unknown,
}

/// A target's table of filter fields.
pub trait FilterField: Clone + std::fmt::Debug + PartialEq + Sized {
    /// The other target, whose fields are refused with a hint rather than as typos.
    type Other: FilterField;
    /// What the target's rows are called, with the route that filters them.
    const TARGET: &'static str;
    /// The fields accepted, for errors.
    const EXPECTED: &'static str;
    /// The field `name` (with `key` when written `name[key]`).
    fn lookup(name: &str, key: Option<&str>) -> Lookup<Self>;
    /// Whether the field compares without case.
    fn ignores_case(&self) -> bool;
}

impl FilterField for Field {
    type Other = AssetField;
    const TARGET: &'static str = "allocations (/model/allocation)";
    const EXPECTED: &'static str = "cluster, node, namespace, controllerName, controllerKind, container, pod, services, label[..], annotation[..], department, environment, owner, product or team";

    fn lookup(name: &str, key: Option<&str>) -> Lookup<Self> {
        let label = |k: &str| Lookup::Field(Field::Label(k.to_string()));
        match (name, key) {
            ("cluster", None) => Lookup::Field(Field::Cluster),
            ("node", None) => Lookup::Field(Field::Node),
            ("namespace", None) => Lookup::Field(Field::Namespace),
            ("controllerName", None) => Lookup::Field(Field::ControllerName),
            ("controllerKind", None) => Lookup::Field(Field::ControllerKind),
            ("container", None) => Lookup::Field(Field::Container),
            ("pod", None) => Lookup::Field(Field::Pod),
            ("services", None) => Lookup::Field(Field::Services),
            ("label", Some(k)) => Lookup::Field(Field::Label(sanitize(k))),
            ("annotation", Some(k)) => Lookup::Field(Field::Annotation(sanitize(k))),
            ("department", None) => label("department"),
            ("environment", None) => label("env"),
            ("owner", None) => label("owner"),
            ("product", None) => label("app"),
            ("team", None) => label("team"),
            ("label" | "annotation", None) => Lookup::NeedsKey,
            _ => Lookup::Unknown,
        }
    }

    fn ignores_case(&self) -> bool {
        *self == Field::ControllerKind
    }
}

impl FilterField for AssetField {
    type Other = Field;
    const TARGET: &'static str = "assets (/model/assets)";
    const EXPECTED: &'static str = "name, assetType, category, cluster, project, provider, providerID, account, service or label[..]";

    fn lookup(name: &str, key: Option<&str>) -> Lookup<Self> {
        match (name, key) {
            ("name", None) => Lookup::Field(AssetField::Name),
            ("assetType", None) => Lookup::Field(AssetField::Type),
            ("category", None) => Lookup::Field(AssetField::Category),
            ("cluster", None) => Lookup::Field(AssetField::Cluster),
            ("project", None) => Lookup::Field(AssetField::Project),
            ("provider", None) => Lookup::Field(AssetField::Provider),
            ("providerID", None) => Lookup::Field(AssetField::ProviderId),
            ("account", None) => Lookup::Field(AssetField::Account),
            ("service", None) => Lookup::Field(AssetField::Service),
            ("label", Some(k)) => Lookup::Field(AssetField::Label(sanitize(k))),
            ("label", None) => Lookup::NeedsKey,
            _ => Lookup::Unknown,
        }
    }

    fn ignores_case(&self) -> bool {
        *self == AssetField::Type
    }
}

/// What a row holds in one field.
pub enum Value<'a> {
    /// One string (empty when absent).
    One(&'a str),
    /// A list: the field matches when any item does (none, for a negated operator).
    AnyOf(&'a [String]),
}

/// A row a filter over fields `F` can test.
pub trait Row<F> {
    /// The row's value of `field`.
    fn value(&self, field: &F) -> Value<'_>;
}

impl<P: Props> Row<Field> for P {
    fn value(&self, field: &Field) -> Value<'_> {
        Value::One(match field {
            Field::Cluster => self.cluster(),
            Field::Node => self.node(),
            Field::Namespace => self.namespace(),
            Field::ControllerName => self.controller(),
            Field::ControllerKind => self.controller_kind(),
            Field::Container => self.container(),
            Field::Pod => self.pod(),
            Field::Label(k) => self.labels().get(k).map_or("", String::as_str),
            Field::Annotation(k) => self.annotations().get(k).map_or("", String::as_str),
            Field::Services => return Value::AnyOf(self.services()),
        })
    }
}

impl Row<AssetField> for Asset {
    fn value(&self, field: &AssetField) -> Value<'_> {
        Value::One(match field {
            AssetField::Name => &self.name,
            AssetField::Type => &self.kind,
            AssetField::Category => &self.category,
            AssetField::Cluster => &self.cluster,
            AssetField::Provider => &self.provider,
            AssetField::ProviderId => &self.provider_id,
            AssetField::Service => &self.service,
            AssetField::Label(k) => self.labels.get(k).map_or("", String::as_str),
            // Not recorded by this build: compared as the empty string, as OpenCost compares
            // an asset without them.
            AssetField::Project | AssetField::Account => "",
        })
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

impl<F: FilterField> Filter<F> {
    /// Whether the row (allocation properties, or an asset) passes.
    pub fn matches<R: Row<F>>(&self, p: &R) -> bool {
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
}

impl Filter<Field> {
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

impl<F: FilterField> Comparison<F> {
    fn new(field: F, op: Op, mut values: Vec<String>) -> Self {
        if field.ignores_case() {
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

    fn matches<R: Row<F>>(&self, row: &R) -> bool {
        let any = match row.value(&self.field) {
            Value::One(have) if self.field.ignores_case() => self.any(&have.to_ascii_lowercase()),
            Value::One(have) => self.any(have),
            Value::AnyOf(list) => list.iter().any(|s| self.any(s)),
        };
        if self.op.negated() { !any } else { any }
    }
}

/// Longest filter accepted.
const MAX_FILTER_BYTES: usize = 16 * 1024;
/// Deepest nesting of parentheses accepted: the parser recurses once per level.
const MAX_DEPTH: usize = 32;

/// Parses an allocation filter; the error names the position and what was expected.
pub fn parse(text: &str) -> Result<Filter, String> {
    parse_for(text)
}

/// Parses an asset filter (`/assets`); the error names the position and what was expected.
pub fn parse_asset(text: &str) -> Result<Filter<AssetField>, String> {
    parse_for(text)
}

/// Parses a filter over the fields of `F`.
pub fn parse_for<F: FilterField>(text: &str) -> Result<Filter<F>, String> {
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
        fields: std::marker::PhantomData::<F>,
    };
    let f = p.expr()?;
    p.ws();
    if p.i < p.s.len() {
        return Err(p.err("end of filter or + or |"));
    }
    Ok(f)
}

struct Parser<'a, F> {
    s: &'a [u8],
    i: usize,
    text: &'a str,
    depth: usize,
    fields: std::marker::PhantomData<F>,
}

impl<F: FilterField> Parser<'_, F> {
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

    fn expr(&mut self) -> Result<Filter<F>, String> {
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

    fn term(&mut self) -> Result<Filter<F>, String> {
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

    fn comparison(&mut self) -> Result<Comparison<F>, String> {
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
        let field = match F::lookup(&name, key.as_deref()) {
            Lookup::Field(f) => f,
            Lookup::NeedsKey => {
                return Err(format!(
                    "filter {:?}: {name} at position {at} needs a key, as in {name}[app]",
                    self.text
                ));
            }
            Lookup::Unknown => {
                // A field of the other target is no typo: say where it belongs.
                let elsewhere = match F::Other::lookup(&name, key.as_deref()) {
                    Lookup::Unknown => String::new(),
                    _ => format!(" ({name} filters {}, not {})", F::Other::TARGET, F::TARGET),
                };
                return Err(format!(
                    "filter {:?}: unknown field {name:?} at position {at}{elsewhere}; expected {}",
                    self.text,
                    F::EXPECTED
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

    fn asset(kind: &str, name: &str, cluster: &str) -> Asset {
        Asset {
            kind: kind.into(),
            name: name.into(),
            cluster: cluster.into(),
            provider: "custom".into(),
            provider_id: format!("i-{name}"),
            category: "Compute".into(),
            service: "Kubernetes".into(),
            labels: [("pool".to_string(), "general".to_string())].into(),
            ..Asset::default()
        }
    }

    #[test]
    fn every_asset_field_reads_its_own_value() {
        let a = asset("Node", "gke-pool-1", "c1");
        for (filter, want) in [
            (r#"name:"gke-pool-1""#, true),
            (r#"name:"gke-pool-2""#, false),
            (r#"assetType:"Node""#, true),
            (r#"assetType:"node""#, true),
            (r#"assetType:"NODE","Disk""#, true),
            (r#"assetType:"Disk""#, false),
            (r#"category:"Compute""#, true),
            (r#"category:"compute""#, false),
            (r#"cluster:"c1""#, true),
            (r#"provider:"custom""#, true),
            (r#"providerID:"i-gke-pool-1""#, true),
            (r#"service:"Kubernetes""#, true),
            (r#"label[pool]:"general""#, true),
            (r#"label[zone]:"""#, true),
            // Not recorded by this build: the empty string.
            (r#"account:"""#, true),
            (r#"project:"p1""#, false),
            (r#"project!:"p1""#, true),
        ] {
            assert_eq!(parse_asset(filter).unwrap().matches(&a), want, "{filter}");
        }
    }

    #[test]
    fn every_operator_works_on_assets() {
        let a = asset("LoadBalancer", "shop/web-public", "c1");
        for (filter, want) in [
            (r#"name:"shop/web-public""#, true),
            (r#"name!:"shop/web-public""#, false),
            (r#"name~:"web""#, true),
            (r#"name!~:"web""#, false),
            (r#"name<~:"shop/""#, true),
            (r#"name!<~:"shop/""#, false),
            (r#"name~>:"-public""#, true),
            (r#"name!~>:"-public""#, false),
            (r#"assetType~:"balance""#, true),
            (r#"assetType<~:"LOAD""#, true),
            (r#"assetType!~>:"Balancer""#, false),
        ] {
            assert_eq!(parse_asset(filter).unwrap().matches(&a), want, "{filter}");
        }
        let f = parse_asset(r#"(assetType:"Node" | assetType:"Disk") + cluster!:"c2""#).unwrap();
        assert!(f.matches(&asset("Disk", "d", "c1")));
        assert!(!f.matches(&asset("Disk", "d", "c2")));
        assert!(!f.matches(&a));
    }

    #[test]
    fn a_field_of_the_other_target_is_refused_by_name_with_the_valid_ones() {
        let e = parse_asset(r#"namespace:"kube-system""#).unwrap_err();
        assert!(e.contains(r#"unknown field "namespace""#), "{e}");
        assert!(e.contains("filters allocations (/model/allocation)"), "{e}");
        assert!(e.contains(AssetField::EXPECTED), "{e}");
        let e = parse(r#"assetType:"Node""#).unwrap_err();
        assert!(e.contains(r#"unknown field "assetType""#), "{e}");
        assert!(e.contains("filters assets (/model/assets)"), "{e}");
        assert!(e.contains(Field::EXPECTED), "{e}");
        // A plain typo gets no hint, and the allocation message is what it always was.
        assert_eq!(
            parse(r#"nmespace:"a""#).unwrap_err(),
            r#"filter "nmespace:\"a\"": unknown field "nmespace" at position 0; expected cluster, node, namespace, controllerName, controllerKind, container, pod, services, label[..], annotation[..], department, environment, owner, product or team"#
        );
        let e = parse_asset(r#"nmae:"a""#).unwrap_err();
        assert!(!e.contains("filters"), "{e}");
        assert!(
            parse_asset(r#"label:"a""#)
                .unwrap_err()
                .contains("needs a key")
        );
        assert!(
            parse_asset(r#"cluster:"a" + services:"b""#)
                .unwrap_err()
                .contains(r#"unknown field "services""#)
        );
        let ok = parse_asset(r#"label[app.kubernetes.io/name]:"x""#).unwrap();
        let Filter::Cmp(c) = ok else { panic!() };
        assert_eq!(c.field, AssetField::Label("app_kubernetes_io_name".into()));
    }
}
