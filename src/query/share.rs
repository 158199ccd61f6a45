//! Shared costs (`shareNamespaces`, `shareLabels`, `shareCost`, `shareSplit`), as OpenCost's
//! aggregation shares them: the allocations of shared namespaces or labels leave the answer and
//! their cost, with a fixed monthly cost, is spread over the other allocations, in proportion
//! to their cost (`weighted`) or evenly (`even`). Each receiving allocation reports what it
//! got in `sharedCost` and, per shared item, in `sharedCostBreakdown`.

use std::collections::HashMap;

use super::{HOURS_PER_MONTH, ParamError, bad, filter};
use crate::model::Props;

/// Name of the fixed shared cost in `sharedCostBreakdown` (OpenCost's `__shared__`).
pub(super) const SHARED: &str = "__shared__";

/// How shared costs are split (`shareSplit`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum ShareSplit {
    /// In proportion to each allocation's total cost (`weighted`, the default).
    #[default]
    Weighted,
    /// The same to every allocation (`even`).
    Even,
}

/// What a query shares.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sharing {
    /// Namespaces whose allocations are shared (`shareNamespaces`).
    pub namespaces: Vec<String>,
    /// `(sanitised key, value)` labels whose allocations are shared (`shareLabels`).
    pub labels: Vec<(String, String)>,
    /// A fixed cost shared every month, in $ (`shareCost`; 30.42 is $1 a day).
    pub monthly_cost: f64,
    /// How it is split (`shareSplit`).
    pub split: ShareSplit,
    /// Whether each allocation lists what it received (`includeSharedCostBreakdown`, default
    /// true).
    pub breakdown: bool,
}

impl Sharing {
    /// Reads the sharing parameters.
    pub(crate) fn parse(params: &HashMap<String, String>) -> Result<Self, ParamError> {
        let get = |k: &str| params.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
        let list = |k: &str| {
            get(k)
                .unwrap_or("")
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        let labels = list("shareLabels")
            .into_iter()
            .map(|item| match item.split_once(':') {
                Some((k, v)) if !k.trim().is_empty() => {
                    Ok((filter::sanitize(k.trim()), v.trim().to_string()))
                }
                _ => Err(bad(
                    "shareLabels",
                    format!("{item:?} is not key:value, as in env:staging"),
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let monthly_cost = match get("shareCost") {
            None => 0.0,
            Some(v) => match v.parse::<f64>() {
                Ok(c) if c.is_finite() && c >= 0.0 => c,
                _ => {
                    return Err(bad(
                        "shareCost",
                        format!("{v:?} is not a cost; expected dollars per month, such as 30.42"),
                    ));
                }
            },
        };
        let split = match get("shareSplit").map(str::to_ascii_lowercase).as_deref() {
            None | Some("weighted") => ShareSplit::Weighted,
            Some("even") => ShareSplit::Even,
            Some(other) => {
                return Err(bad(
                    "shareSplit",
                    format!("{other:?} is not a split; expected weighted or even"),
                ));
            }
        };
        let breakdown = match get("includeSharedCostBreakdown") {
            None => true,
            Some(v) => super::parse_bool("includeSharedCostBreakdown", v)?,
        };
        Ok(Sharing {
            namespaces: list("shareNamespaces"),
            labels,
            monthly_cost,
            split,
            breakdown,
        })
    }

    /// Whether anything is shared.
    pub fn is_active(&self) -> bool {
        !self.namespaces.is_empty() || !self.labels.is_empty() || self.monthly_cost > 0.0
    }

    /// Whether an allocation with these properties is shared.
    pub fn shares(&self, p: &impl Props) -> bool {
        self.namespaces.iter().any(|n| n == p.namespace())
            || self
                .labels
                .iter()
                .any(|(k, v)| p.labels().get(k).is_some_and(|have| have == v))
    }

    /// The fixed cost shared over `hours`.
    pub fn fixed_cost(&self, hours: f64) -> f64 {
        self.monthly_cost * hours / HOURS_PER_MONTH
    }
}
