//! Custom pricing: the prices used where Prometheus has no price series for a node, a volume, a
//! load balancer or egress. The file is OpenCost's custom pricing JSON (`default.json`): hourly
//! prices as strings under Kubecost's keys. Keys this replica does not use are accepted and
//! ignored (the file carries provider settings too); a price that is not a number is an error
//! naming the key.

use std::path::Path;

use serde_json::Value;

/// Hourly prices ($ per core-hour, GiB-hour, GPU-hour; storage $ per GiB-hour; egress $ per GiB;
/// a load balancer $ per hour).
#[derive(Clone, Debug, PartialEq)]
pub struct Pricing {
    /// `CPU`.
    pub cpu: f64,
    /// `spotCPU`.
    pub spot_cpu: f64,
    /// `RAM`, per GiB.
    pub ram: f64,
    /// `spotRAM`, per GiB.
    pub spot_ram: f64,
    /// `GPU`.
    pub gpu: f64,
    /// `spotGPU`.
    pub spot_gpu: f64,
    /// `storage`, per GiB.
    pub storage: f64,
    /// `zoneNetworkEgress`, per GiB.
    pub zone_egress: f64,
    /// `regionNetworkEgress`, per GiB.
    pub region_egress: f64,
    /// `internetNetworkEgress`, per GiB.
    pub internet_egress: f64,
    /// `defaultLBPrice`, per load balancer.
    pub load_balancer: f64,
}

impl Default for Pricing {
    /// OpenCost's `configs/default.json` ("based on GCP us-central1"); `spotGPU` is Kubecost's
    /// chart default (225 $/month at 730 h), and a load balancer 0.025 $/h (one GCP forwarding
    /// rule), as neither is in that file.
    fn default() -> Self {
        Self {
            cpu: 0.031611,
            spot_cpu: 0.006655,
            ram: 0.004237,
            spot_ram: 0.000892,
            gpu: 0.95,
            spot_gpu: 225.0 / 730.0,
            storage: 0.00005479452,
            zone_egress: 0.01,
            region_egress: 0.01,
            internet_egress: 0.12,
            load_balancer: 0.025,
        }
    }
}

impl Pricing {
    /// Reads a custom pricing file; keys it does not set keep their defaults.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses custom pricing JSON.
    pub fn parse(text: &str) -> Result<Self, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let Value::Object(map) = v else {
            return Err("expected a JSON object of prices".into());
        };
        let mut p = Self::default();
        let slots: [(&str, &mut f64); 11] = [
            ("CPU", &mut p.cpu),
            ("spotCPU", &mut p.spot_cpu),
            ("RAM", &mut p.ram),
            ("spotRAM", &mut p.spot_ram),
            ("GPU", &mut p.gpu),
            ("spotGPU", &mut p.spot_gpu),
            ("storage", &mut p.storage),
            ("zoneNetworkEgress", &mut p.zone_egress),
            ("regionNetworkEgress", &mut p.region_egress),
            ("internetNetworkEgress", &mut p.internet_egress),
            ("defaultLBPrice", &mut p.load_balancer),
        ];
        for (key, slot) in slots {
            let parsed = match map.get(key) {
                None | Some(Value::Null) => continue,
                // OpenCost writes every price as a string; an empty one means "not set".
                Some(Value::String(s)) if s.trim().is_empty() => continue,
                Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
                Some(Value::Number(n)) => n.as_f64(),
                Some(_) => None,
            };
            match parsed {
                Some(x) if x.is_finite() && x >= 0.0 => *slot = x,
                _ => {
                    return Err(format!(
                        "`{key}` must be a non-negative number (as a string, like \"0.031611\"), got {}",
                        map[key]
                    ));
                }
            }
        }
        Ok(p)
    }

    /// CPU price for a node.
    pub fn cpu(&self, spot: bool) -> f64 {
        if spot { self.spot_cpu } else { self.cpu }
    }

    /// RAM price per GiB for a node.
    pub fn ram(&self, spot: bool) -> f64 {
        if spot { self.spot_ram } else { self.ram }
    }

    /// GPU price for a node.
    pub fn gpu(&self, spot: bool) -> f64 {
        if spot { self.spot_gpu } else { self.gpu }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opencost_default_file_parses_to_the_defaults() {
        let text = r#"{"provider":"custom","description":"Default prices based on GCP us-central1",
            "CPU":"0.031611","spotCPU":"0.006655","RAM":"0.004237","spotRAM":"0.000892",
            "GPU":"0.95","storage":"0.00005479452","zoneNetworkEgress":"0.01",
            "regionNetworkEgress":"0.01","internetNetworkEgress":"0.12","defaultLBPrice":""}"#;
        assert_eq!(Pricing::parse(text).unwrap(), Pricing::default());
    }

    #[test]
    fn set_keys_replace_defaults_and_spot_picks_spot_prices() {
        let p = Pricing::parse(r#"{"CPU":"0.05","spotCPU":0.01,"defaultLBPrice":"0.1"}"#).unwrap();
        assert_eq!(p.cpu(false), 0.05);
        assert_eq!(p.cpu(true), 0.01);
        assert_eq!(p.load_balancer, 0.1);
        assert_eq!(p.ram(false), Pricing::default().ram);
    }

    #[test]
    fn a_bad_price_names_its_key() {
        let e = Pricing::parse(r#"{"RAM":"cheap"}"#).unwrap_err();
        assert!(e.contains("`RAM`"), "{e}");
        let e = Pricing::parse(r#"{"GPU":"-1"}"#).unwrap_err();
        assert!(e.contains("`GPU`"), "{e}");
        assert!(Pricing::parse("[1]").is_err());
    }
}
